"""The IDX format of MNIST and Fashion-MNIST, gzip-compressed, read with nothing but NumPy.

After decompressing, an IDX file is::

    bytes 0-3    magic number, big-endian: 0x00 0x00, a type code (0x08 = unsigned byte), the number of
                 dimensions d. Images: 0x00000803 = 2051 (d = 3); labels: 0x00000801 = 2049 (d = 1).
    next 4*d     the size of each dimension, big-endian uint32: images N, rows, cols; labels N
    the rest     N*rows*cols (or N) uint8 values in C order, nothing after them

``read_gzip`` decompresses, ``parse_idx`` parses; ``read_idx`` does both. Each failure raises
``DatasetError`` with the file's name and its most precise fault (not gzip, corrupt stream, wrong magic,
truncated header or body, trailing bytes). No checksum here: the loaders add that, since only they know
which file they expect.
"""
import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from minimf.datasets.common import DatasetError, check_same_count, verify_labels

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)
GZIP_MAGIC = b"\x1f\x8b"


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
    _check_body_length(len(data) - start, math.prod(shape), shape, source)   # exact: NumPy's prod would wrap
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
    """Read the gzip-compressed IDX file at ``path``; return uint8 of shape (N, rows, cols) or (N,)."""
    return parse_idx(read_gzip(path), expected_magic, path)


def read_image_pair(images_path, labels_path, num_classes=10):
    """Read an images/labels pair of IDX files: uint8 images (N, rows, cols) and uint8 labels (N,).

    Checks that the counts agree and every label is below ``num_classes``.
    """
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    check_same_count(images, labels, images_path, labels_path)
    verify_labels(labels, num_classes, labels_path)
    return images, labels
