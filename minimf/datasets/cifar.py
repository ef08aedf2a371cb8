"""CIFAR-10 and CIFAR-100, python versions: pickled batches inside a tar.gz, read without unpacking it
and without letting the pickles run code.

The archives hold (only the members read here are listed)::

    cifar-10-python.tar.gz    cifar-10-batches-py/data_batch_1 ... data_batch_5   10,000 images each
                              cifar-10-batches-py/test_batch                      10,000 images
    cifar-100-python.tar.gz   cifar-100-python/train                              50,000 images
                              cifar-100-python/test                               10,000 images

Each member is one Python 2 pickle (protocol 2) of a dict::

    "data"     numpy uint8 array (N, 3072): per image 1024 red, 1024 green, 1024 blue values, each a
               32 x 32 plane in row-major order; so data.reshape(N, 3, 32, 32) is (N, C, H, W)
    "labels"   CIFAR-10: list of N ints in [0, 10)
    "fine_labels", "coarse_labels"   CIFAR-100: lists of N ints in [0, 100) and [0, 20)
    plus "batch_label" and "filenames" (strings), not used

Unpickling can call any function the pickle names: a pickle that names ``os.system`` runs a shell
command. ``RestrictedUnpickler`` therefore resolves only the three names that NumPy arrays need
(``_reconstruct``, ``ndarray``, ``dtype``) and refuses every other one, so the pickles can hold dicts,
lists, strings, numbers and uint8 arrays and nothing that runs code. Every fault (a broken archive, a
missing member, a malformed pickle, an unexpected name, a wrong shape, a label out of range) raises
``DatasetError`` naming the archive and member. The archive's SHA-256 is checked before any of this.
"""
import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from minimf.datasets.common import DatasetError, verify_labels

IMAGE_SHAPE = (3, 32, 32)
ROW = 3 * 32 * 32  # 3072 values per image

# The members of each archive, per split, in order; and the label keys with their number of classes.
LAYOUTS = {
    "cifar10": {
        "members": {"train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
                    "test": ["cifar-10-batches-py/test_batch"]},
        "labels": {"fine": ("labels", 10)},
    },
    "cifar100": {
        "members": {"train": ["cifar-100-python/train"], "test": ["cifar-100-python/test"]},
        "labels": {"fine": ("fine_labels", 100), "coarse": ("coarse_labels", 20)},
    },
}


# ---------------------------------------------------------------------------------------------------
# The restricted unpickler
# ---------------------------------------------------------------------------------------------------

def _numpy_core():
    """NumPy's core module: ``numpy._core`` from NumPy 2, ``numpy.core`` before."""
    return getattr(np, "_core", None) or np.core


# (module, name) as written in a pickle -> the object it may resolve to. Python 2 era pickles (the
# CIFAR files) write numpy.core.multiarray; NumPy 2 writes numpy._core.multiarray. Nothing else.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_core().multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_core().multiarray._reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names a function or class outside the allowed NumPy ones."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` allows only NumPy's array reconstruction (see module docstring).

    ``find_class`` is the one place where a pickle turns a name into a callable, so refusing there
    refuses every way of calling code (GLOBAL, STACK_GLOBAL, INST, OBJ, EXT codes all pass through it).
    Persistent IDs are refused by ``pickle.Unpickler`` itself when ``persistent_load`` is not set.
    """

    def find_class(self, module, name):
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise RefusedPickle(f"refused to load {module}.{name}: CIFAR batches hold only dicts, lists, "
                                f"strings, numbers and NumPy arrays")
        return resolve()


def restricted_loads(data: bytes):
    """Unpickle ``data`` (a Python 2 pickle: its strings are decoded as latin-1) with ``RestrictedUnpickler``."""
    return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()


# ---------------------------------------------------------------------------------------------------
# Batches and archives
# ---------------------------------------------------------------------------------------------------

def parse_batch(data: bytes, label_keys, source="<bytes>"):
    """Unpickle one CIFAR batch; return (images uint8 (N, 3, 32, 32), {key: int64 labels (N,)}).

    ``label_keys`` maps each wanted label key (e.g. "fine_labels") to its number of classes.
    """
    try:
        batch = restricted_loads(data)
    except RefusedPickle as err:
        raise DatasetError(f"{source}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, OverflowError, MemoryError) as err:
        fault = "truncated pickle" if isinstance(err, EOFError) or "truncated" in str(err) else "malformed pickle"
        raise DatasetError(f"{source}: {fault} ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{source}: expected a dict, the pickle holds a {type(batch).__name__}")
    images = _batch_images(batch, source)
    labels = {key: _batch_labels(batch, key, len(images), classes, source) for key, classes in label_keys.items()}
    return images, labels


def _batch_images(batch, source):
    data = _entry(batch, "data", source)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == ROW):
        if isinstance(data, np.ndarray):
            described = f"{data.dtype} array of shape {data.shape}"
        else:
            described = type(data).__name__
        raise DatasetError(f"{source}: 'data' must be a uint8 array of shape (N, {ROW}), found {described}")
    return data.reshape(len(data), *IMAGE_SHAPE)


def _batch_labels(batch, key, n, num_classes, source):
    values = _entry(batch, key, source)
    if not isinstance(values, (list, np.ndarray)) or not all(isinstance(v, (int, np.integer)) for v in values):
        raise DatasetError(f"{source}: '{key}' must be a list of integers")
    if len(values) != n:
        raise DatasetError(f"{source}: {n} images but {len(values)} '{key}'")
    labels = np.asarray(values, dtype=np.int64)
    verify_labels(labels, num_classes, f"{source} '{key}'")
    return labels


def _entry(batch, key, source):
    if key not in batch:
        raise DatasetError(f"{source}: no '{key}' in the batch (it has {sorted(map(str, batch))})")
    return batch[key]


def read_members(path, names) -> dict:
    """Return {member name: bytes} for ``names`` from the tar.gz at ``path``, in one pass, extracting
    nothing to disk. Raises ``DatasetError`` for a broken archive or a missing or non-file member."""
    path = Path(path)
    wanted, found = set(names), {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                if member.name in wanted:
                    if not member.isfile():
                        raise DatasetError(f"{path}: member {member.name} is not a regular file")
                    found[member.name] = tar.extractfile(member).read()
                    if len(found) == len(wanted):
                        break
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing file") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DatasetError(f"{path}: truncated or corrupt tar.gz archive ({type(err).__name__}: {err})") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise DatasetError(f"{path}: the archive has no member {', '.join(missing)}")
    return found


def read_cifar(path, name):
    """Read a CIFAR archive: {"train": (images, labels), "test": (images, labels)}.

    ``name`` is "cifar10" or "cifar100"; images are uint8 (N, 3, 32, 32); labels is {"fine": int64 (N,)}
    plus "coarse" for CIFAR-100.
    """
    layout = LAYOUTS[name]
    members = read_members(path, [m for split in layout["members"].values() for m in split])
    label_keys = dict(layout["labels"].values())
    out = {}
    for split, names in layout["members"].items():
        parsed = [parse_batch(members[m], label_keys, f"{path}:{m}") for m in names]
        images = np.concatenate([p[0] for p in parsed])
        labels = {kind: np.concatenate([p[1][key] for p in parsed]) for kind, (key, _) in layout["labels"].items()}
        out[split] = (images, labels)
    return out
