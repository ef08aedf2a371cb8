"""Small data files in the real formats, made by the tests (the real ones are 26-170 MB and need a network).

* ``idx_gz``: a gzip-compressed IDX file, as MNIST and Fashion-MNIST publish them.
* ``py2_pickle``: a protocol-2 pickle written the way Python 2's cPickle wrote the CIFAR batches: strings
  as BINSTRING opcodes and NumPy arrays through ``numpy.core.multiarray._reconstruct``. (Python 3's
  pickler would write ``_codecs.encode`` calls for bytes instead, which the CIFAR files never contain.)
* ``cifar_archive``: a tar.gz with the member names and batch dicts of the CIFAR python archives.
* ``install``: puts generated files into a cache folder and points the catalog at their checksums.
* ``random_images``: a batch of random float64 images and labels, already in memory, for the CNN tests.
"""
import gzip
import hashlib
import io
import struct
import tarfile

import numpy as np

from minimf.datasets import catalog
from minimf.datasets.catalog import RemoteFile
from minimf.datasets.idx import IMAGES_MAGIC, LABELS_MAGIC


def gz(data):
    return gzip.compress(data, compresslevel=1, mtime=0)


def idx_gz(array, magic):
    """The gzip-compressed IDX bytes of a uint8 ``array``."""
    return gz(struct.pack(f">I{array.ndim}I", magic, *array.shape) + np.ascontiguousarray(array).tobytes())


# ---------------------------------------------------------------------------------------------------
# Python 2 style pickles
# ---------------------------------------------------------------------------------------------------

def py2_pickle(obj) -> bytes:
    """Pickle ``obj`` (dicts, lists, tuples, str/bytes, ints, bools, None, NumPy arrays) as Python 2 did."""
    out = bytearray(b"\x80\x02")  # PROTO 2
    _emit(obj, out)
    return bytes(out + b".")      # STOP


def _emit(obj, out):
    if obj is None:
        out += b"N"
    elif obj is True or obj is False:
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, (int, np.integer)):
        value = int(obj)
        out += b"K" + bytes([value]) if 0 <= value < 256 else b"J" + struct.pack("<i", value)
    elif isinstance(obj, (str, bytes)):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        out += (b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<I", len(data))) + data
    elif isinstance(obj, tuple):
        out += b"("
        for item in obj:
            _emit(item, out)
        out += b"t"
    elif isinstance(obj, list):
        out += b"](" if obj else b"]"
        for item in obj:
            _emit(item, out)
        out += b"e" if obj else b""
    elif isinstance(obj, dict):
        out += b"}("
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)
        out += b"u"
    elif isinstance(obj, np.ndarray):
        _emit_array(obj, out)
    else:
        raise TypeError(f"py2_pickle cannot write {type(obj).__name__}")


def _emit_array(array, out):
    """_reconstruct(ndarray, (0,), 'b'), then BUILD with (1, shape, dtype, fortran, raw bytes)."""
    out += b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n"
    _emit((0,), out)
    _emit("b", out)
    out += b"\x87R"  # TUPLE3, REDUCE
    out += b"("
    _emit(1, out)
    _emit(tuple(array.shape), out)
    out += b"cnumpy\ndtype\n"  # dtype('u1', 0, 1) with its state
    _emit((array.dtype.str[1:], 0, 1), out)
    out += b"R"
    _emit((3, "|", None, None, None, -1, -1, 0), out)
    out += b"b"
    _emit(False, out)
    _emit(np.ascontiguousarray(array).tobytes(), out)
    out += b"tb"  # TUPLE, BUILD


# ---------------------------------------------------------------------------------------------------
# Whole data sets
# ---------------------------------------------------------------------------------------------------

def tar_gz(members: dict, links: dict | None = None) -> bytes:
    """A tar.gz holding ``members`` ({name: bytes}) as regular files, then ``links`` ({name: target})
    as symbolic links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tar.addfile(link)
    return buffer.getvalue()


def fashion_files(rng, n_train=60, n_test=20):
    """({file name: gz bytes} of a small Fashion-MNIST, {split: (images (N, 28, 28), labels (N,))})."""
    arrays = {split: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8))
              for split, n in (("train", n_train), ("test", n_test))}
    files = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = arrays[split]
        files[f"{prefix}-images-idx3-ubyte.gz"] = idx_gz(images, IMAGES_MAGIC)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = idx_gz(labels, LABELS_MAGIC)
    return files, arrays


def cifar_batch(images, labels_by_key, name="batch"):
    """One batch dict as in the CIFAR archives: images (N, 3, 32, 32) uint8 as data (N, 3072)."""
    batch = {"batch_label": name, "data": images.reshape(len(images), 3072)}
    batch.update({key: [int(v) for v in values] for key, values in labels_by_key.items()})
    batch["filenames"] = [f"img_{i}.png" for i in range(len(images))]
    return batch


def cifar_archive(kind, rng, n_per_batch=8):
    """(tar.gz bytes, {split: (images (N, 3, 32, 32), {"fine": labels[, "coarse": labels]})}) for
    ``kind`` "cifar10" (5 training batches and a test batch of ``n_per_batch`` images each) or
    "cifar100" (one train and one test member)."""
    def images(n):
        return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)

    members, expected = {}, {}
    if kind == "cifar10":
        train = [(images(n_per_batch), rng.integers(0, 10, n_per_batch)) for _ in range(5)]
        test = (images(n_per_batch), rng.integers(0, 10, n_per_batch))
        for i, (x, y) in enumerate(train, start=1):
            members[f"cifar-10-batches-py/data_batch_{i}"] = py2_pickle(cifar_batch(x, {"labels": y}))
        members["cifar-10-batches-py/test_batch"] = py2_pickle(cifar_batch(test[0], {"labels": test[1]}))
        members["cifar-10-batches-py/batches.meta"] = py2_pickle({"label_names": [f"c{i}" for i in range(10)]})
        expected["train"] = (np.concatenate([x for x, _ in train]), {"fine": np.concatenate([y for _, y in train])})
        expected["test"] = (test[0], {"fine": test[1]})
    else:
        for split, n in (("train", 5 * n_per_batch), ("test", n_per_batch)):
            x, fine, coarse = images(n), rng.integers(0, 100, n), rng.integers(0, 20, n)
            members[f"cifar-100-python/{split}"] = py2_pickle(
                cifar_batch(x, {"fine_labels": fine, "coarse_labels": coarse}))
            expected[split] = (x, {"fine": fine, "coarse": coarse})
        members["cifar-100-python/meta"] = py2_pickle({"fine_label_names": [f"f{i}" for i in range(100)]})
    return tar_gz(members), expected


def remote(name, data, urls=()):
    """The ``RemoteFile`` of generated bytes ``data``."""
    return RemoteFile(name, len(data), hashlib.sha256(data).hexdigest(), tuple(urls))


def install(monkeypatch, root, dataset, files: dict, sizes, urls=None):
    """Write ``files`` ({name: bytes}) into ``root/dataset`` and point the catalog at their checksums.

    ``urls`` maps a file name to its addresses (default: none, so a missing file cannot download).
    """
    folder = root / dataset
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    info = catalog.DATASETS[dataset]
    order = [f.name for f in info.files]  # keep the catalog's order: the readers rely on it
    remotes = tuple(remote(name, files[name], (urls or {}).get(name, ())) for name in order)
    monkeypatch.setitem(catalog.DATASETS, dataset, info._replace(files=remotes, sizes=sizes))
    return folder


def random_images(xp, n=3, seed=0, *, shape, classes):
    """n standard-normal float64 images of ``shape`` (C, H, W) and labels in [0, classes), drawn on
    the host from ``seed`` and moved to ``xp``. Test files fix shape and classes with functools.partial."""
    rng = np.random.default_rng(seed)
    return xp.asarray(rng.standard_normal((n, *shape))), xp.asarray(rng.integers(0, classes, n))
