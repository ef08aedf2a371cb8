"""Data sets: the MNIST copy that ships inside the package, read with nothing but NumPy.

MNIST comes as four gzip-compressed files in the IDX format. After decompressing, an IDX file is::

    bytes 0-3    magic number, big-endian: 0x00 0x00, a type code (0x08 = unsigned byte), the number of
                 dimensions d. Images: 0x00000803 = 2051 (d = 3); labels: 0x00000801 = 2049 (d = 1).
    next 4*d     the size of each dimension, big-endian uint32: images N, rows, cols; labels N
    the rest     N*rows*cols (or N) uint8 values in C order, nothing after them

``read_idx`` parses one file; ``load_mnist`` reads all four, checks that images and labels pair up,
verifies the SHA-256 of every file's *uncompressed* content, and returns float32 pixels in [0, 1] with
int64 labels. Checks run from the most specific to the most general (gzip container, IDX header, data
length, image/label pairing, then the checksum), so a damaged file is reported by its most precise fault.
Every failure raises ``DatasetError``, whose message names the file and what is wrong with it.
"""
import gzip
import hashlib
import operator
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)
GZIP_MAGIC = b"\x1f\x8b"

# Pixel statistics of the training images after scaling to [0, 1]; for normalising inputs.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

PACKAGED_MNIST_DIR = Path(__file__).parent / "data" / "mnist"

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


class DatasetError(ValueError):
    """A data file is missing or damaged; the message names the file and the fault."""


class Split(NamedTuple):
    """One split: ``x`` float32 (N, 784) or (N, 1, 28, 28) in [0, 1]; ``y`` int64 (N,) digits 0-9."""

    x: np.ndarray
    y: np.ndarray


class MnistData(NamedTuple):
    """The three splits; ``validation`` is None unless ``validation_size > 0``."""

    train: Split
    validation: Split | None
    test: Split


# ---------------------------------------------------------------------------------------------------
# Low level: bytes in, arrays out
# ---------------------------------------------------------------------------------------------------

def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 of ``data`` as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def read_gzip(path) -> bytes:
    """Return the decompressed content of the gzip file at ``path``.

    Raises ``DatasetError`` if the file is missing, is not gzip at all, or its gzip stream is corrupt
    or cut short.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing file (looked for it in {path.parent})") from None
    except OSError as exc:  # a folder in its place, no permission, ...
        raise DatasetError(f"{path}: cannot read the file ({exc})") from exc
    if raw[:2] != GZIP_MAGIC:
        raise DatasetError(f"{path}: not a gzip file (starts with {raw[:2]!r}, expected {GZIP_MAGIC!r})")
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: corrupt gzip stream ({exc})") from exc


def parse_idx(data: bytes, expected_magic: int, source="<bytes>") -> np.ndarray:
    """Parse the uncompressed IDX bytes ``data`` into a read-only uint8 array of the header's shape.

    Images (magic 2051) give shape (N, rows, cols); labels (magic 2049) give shape (N,). ``source``
    only names the data in error messages. Raises ``DatasetError`` for a wrong magic number, a
    truncated header or body, or bytes left over after the body.
    """
    magic = _read_uint32s(data, 0, 1, source, "magic number")[0]
    if magic != expected_magic:
        raise DatasetError(
            f"{source}: wrong magic number: expected {expected_magic} (0x{expected_magic:08x}), "
            f"found {magic} (0x{magic:08x})"
        )
    ndim = magic & 0xFF  # the magic number's last byte is the number of dimensions
    shape = _read_uint32s(data, 4, ndim, source, "header")
    start = 4 + 4 * ndim
    _check_body_length(len(data) - start, int(np.prod(shape)), shape, source)
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(shape)


def _read_uint32s(data, offset, count, source, what):
    """Return ``count`` big-endian uint32 values starting at byte ``offset``, as a tuple of ints."""
    end = offset + 4 * count
    if len(data) < end:
        raise DatasetError(f"{source}: truncated {what}: need {end} bytes, file has {len(data)}")
    return tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=count, offset=offset))


def _check_body_length(found, expected, shape, source):
    """Raise ``DatasetError`` unless the body holds exactly ``expected`` bytes (one per value)."""
    if found < expected:
        raise DatasetError(f"{source}: truncated: header says {shape} = {expected} bytes, found {found}")
    if found > expected:
        raise DatasetError(
            f"{source}: {found - expected} trailing bytes after the {expected} bytes that the header "
            f"{shape} describes"
        )


def read_idx(path, expected_magic: int) -> np.ndarray:
    """Read the gzip-compressed IDX file at ``path``; return uint8 of shape (N, rows, cols) or (N,).

    No checksum here: ``load_mnist`` adds that, since only it knows which file it expects.
    """
    return parse_idx(read_gzip(path), expected_magic, path)


def verify_sha256(data: bytes, expected: str, source) -> None:
    """Raise ``DatasetError`` unless the SHA-256 of ``data`` equals the hex digest ``expected``."""
    actual = sha256_hex(data)
    if actual != expected:
        raise DatasetError(f"{source}: checksum mismatch: expected sha256 {expected}, actual sha256 {actual}")


def check_same_count(images: np.ndarray, labels: np.ndarray, images_path, labels_path) -> None:
    """Raise ``DatasetError`` unless images (N, rows, cols) and labels (N,) have the same N."""
    if len(images) != len(labels):
        raise DatasetError(
            f"image/label count mismatch: {images_path} has {len(images)} images "
            f"but {labels_path} has {len(labels)} labels"
        )


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
    n_val = _check_validation_size(validation_size)
    data_dir = PACKAGED_MNIST_DIR if data_dir is None else Path(data_dir)
    train = _load_split_uint8(data_dir, *MNIST_FILES["train"])
    test = _load_split_uint8(data_dir, *MNIST_FILES["test"])
    train, validation = _carve_validation(train, n_val, seed)  # on uint8: 4x less to copy than float32
    return MnistData(
        train=_to_split(*train, flatten),
        validation=None if validation is None else _to_split(*validation, flatten),
        test=_to_split(*test, flatten),
    )


def _check_validation_size(validation_size, n_train=60000):
    """Return ``validation_size`` as an int in [0, n_train); anything else is a ValueError."""
    n_val = operator.index(validation_size)  # TypeError for 0.5, "100", ...
    if not 0 <= n_val < n_train:
        raise ValueError(f"validation_size must be in [0, {n_train}), got {n_val}")
    return n_val


def _to_split(images, labels, flatten):
    """uint8 images (N, rows, cols) and labels (N,) -> Split of new float32 x in [0, 1] and int64 y."""
    n, rows, cols = images.shape
    x = images.astype(np.float32)  # a new array: the cached uint8 stays untouched
    x /= 255
    x = x.reshape(n, rows * cols) if flatten else x.reshape(n, 1, rows, cols)
    return Split(x=x, y=labels.astype(np.int64))


def _carve_validation(pair, n_val, seed):
    """Split (images (N, rows, cols), labels (N,)) into (train pair of N - n_val, validation pair of n_val).

    The examples are chosen by a seeded permutation; both parts keep the original order among their own
    examples (indices sorted), so only the seed decides which examples go where. n_val = 0 gives
    (pair, None).
    """
    if n_val == 0:
        return pair, None
    images, labels = pair
    perm = np.random.default_rng(seed).permutation(len(labels))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])
