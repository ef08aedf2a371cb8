"""MNIST, packaged with minimf: the four IDX files of ``minimf/data/mnist/``, no download.

``load_mnist`` reads all four with the IDX parser of ``idx.py``, checks that images and labels pair up,
verifies the SHA-256 of every file's *uncompressed* content, and returns float32 pixels in [0, 1] with
int64 labels. Checks run from the most specific to the most general (gzip container, IDX header, data
length, image/label pairing, then the checksum), so a damaged file is reported by its most precise fault.
Every failure raises ``DatasetError``, whose message names the file and what is wrong with it.
"""
from pathlib import Path
from typing import NamedTuple

from minimf.datasets.common import (
    DatasetError,
    Split,
    carve_validation,
    check_same_count,
    check_validation_size,
    images_to_split,
    verify_sha256,
)
from minimf.datasets.idx import IMAGES_MAGIC, LABELS_MAGIC, parse_idx, read_gzip

# Pixel statistics of the training images after scaling to [0, 1]; for normalising inputs.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

PACKAGED_MNIST_DIR = Path(__file__).parent.parent / "data" / "mnist"

# (images file, labels file) of each split, as published; the folder holds them with a ".gz" suffix.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# SHA-256 of each file's uncompressed content (so any gzip recompression of the same data passes).
MNIST_SHA256 = {
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
}


class MnistData(NamedTuple):
    """The three splits; ``validation`` is None unless ``validation_size > 0``."""

    train: Split
    validation: Split | None
    test: Split


# ---------------------------------------------------------------------------------------------------
# One split, verified and cached
# ---------------------------------------------------------------------------------------------------

# (images file key, labels file key) -> (images uint8 (N, 28, 28), labels uint8 (N,)), both read-only.
# A file key is (resolved path, mtime in ns, size), so a file changed on disk is read again.
_CACHE = {}


def clear_cache() -> None:
    """Forget every parsed file, so the next ``load_mnist`` reads and verifies from disk again."""
    _CACHE.clear()


def _file_key(path):
    """Return (resolved path, mtime_ns, size) of ``path``; a missing file is a ``DatasetError``."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing file (looked for it in {path.parent})") from None
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _load_split_uint8(data_dir, images_name, labels_name):
    """Return the verified (images uint8 (N, 28, 28), labels uint8 (N,)) of one split, from the cache."""
    images_path = data_dir / f"{images_name}.gz"
    labels_path = data_dir / f"{labels_name}.gz"
    key = (_file_key(images_path), _file_key(labels_path))
    if key not in _CACHE:
        _CACHE[key] = _read_verified_pair(images_path, labels_path, images_name, labels_name)
    return _CACHE[key]


def _read_verified_pair(images_path, labels_path, images_name, labels_name):
    """Read, parse and check one images/labels pair; the checksums come last (see module docstring)."""
    images_raw, labels_raw = read_gzip(images_path), read_gzip(labels_path)
    images = parse_idx(images_raw, IMAGES_MAGIC, images_path)
    labels = parse_idx(labels_raw, LABELS_MAGIC, labels_path)
    check_same_count(images, labels, images_path, labels_path)
    verify_sha256(images_raw, MNIST_SHA256[images_name], images_path)
    verify_sha256(labels_raw, MNIST_SHA256[labels_name], labels_path)
    return images, labels


# ---------------------------------------------------------------------------------------------------
# The public loader
# ---------------------------------------------------------------------------------------------------

def load_mnist(*, flatten=True, validation_size=0, seed=0, data_dir=None) -> MnistData:
    """Load MNIST as host NumPy arrays: ``MnistData(train, validation, test)`` of ``Split(x, y)``.

    x: float32 in [0, 1], shape (N, 784) if ``flatten`` else (N, 1, 28, 28); y: int64 (N,).
    ``validation_size`` training examples, chosen by ``np.random.default_rng(seed).permutation``, are
    moved out of train into ``validation`` (None when 0). ``data_dir`` is a folder with the four
    standard ``.gz`` files; None means the copy packaged with minimf. Every call returns fresh arrays.
    """
    n_val = check_validation_size(validation_size, n_train=60000)
    data_dir = PACKAGED_MNIST_DIR if data_dir is None else Path(data_dir)
    train = _load_split_uint8(data_dir, *MNIST_FILES["train"])
    test = _load_split_uint8(data_dir, *MNIST_FILES["test"])
    train, validation = carve_validation(train, n_val, seed)  # on uint8: 4x less to copy than float32
    return MnistData(
        train=images_to_split(*train, flatten),
        validation=None if validation is None else images_to_split(*validation, flatten),
        test=images_to_split(*test, flatten),
    )
