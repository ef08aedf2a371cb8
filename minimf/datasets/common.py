"""What every loader shares: the error type, the (x, y) pair, file keys for the cache, SHA-256 and label
checks, and the validation split."""
import hashlib
import operator
from typing import NamedTuple

import numpy as np


class DatasetError(ValueError):
    """A data file is missing or damaged; the message names the file and the fault."""


class Split(NamedTuple):
    """One split: ``x`` float32 in [0, 1], (N, C, H, W) images or (N, D) rows; ``y`` int64 (N,) labels."""

    x: np.ndarray
    y: np.ndarray


def file_key(path):
    """(resolved path, mtime in ns, size) of ``path``: a file changed on disk gets a new key, so a cache
    keyed by it reads the file again. A missing file is a ``DatasetError``."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing file (looked for it in {path.parent})") from None
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 of ``data`` as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path, chunk=1 << 20) -> str:
    """Return the SHA-256 of the file at ``path``, read in chunks (archives are 170 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def md5_file(path, chunk=1 << 20) -> str:
    """Return the MD5 of the file at ``path``: only for files whose authors publish no SHA-256
    (PathMNIST); it catches damaged and different files, not deliberately forged ones."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(data: bytes, expected: str, source) -> None:
    """Raise ``DatasetError`` unless the SHA-256 of ``data`` equals the hex digest ``expected``."""
    actual = sha256_hex(data)
    if actual != expected:
        raise DatasetError(f"{source}: checksum mismatch: expected sha256 {expected}, actual sha256 {actual}")


def check_same_count(images: np.ndarray, labels: np.ndarray, images_path, labels_path) -> None:
    """Raise ``DatasetError`` unless images (N, ...) and labels (N,) have the same N."""
    if len(images) != len(labels):
        raise DatasetError(
            f"image/label count mismatch: {images_path} has {len(images)} images "
            f"but {labels_path} has {len(labels)} labels"
        )


def verify_labels(labels: np.ndarray, num_classes: int, source) -> None:
    """Raise ``DatasetError`` unless every label a file holds is in [0, num_classes); ``source`` names
    the file. (``minimf.checks.check_labels`` checks a batch's label array before training.)"""
    if len(labels) and not (0 <= labels.min() and labels.max() < num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise DatasetError(f"{source}: label {bad} is outside [0, {num_classes})")


def check_validation_size(validation_size, n_train) -> int:
    """Return ``validation_size`` as an int in [0, n_train); anything else is a ValueError."""
    n_val = operator.index(validation_size)  # TypeError for 0.5, "100", ...
    if not 0 <= n_val < n_train:
        raise ValueError(f"validation_size must be in [0, {n_train}), got {n_val}")
    return n_val


def carve_validation(pair, n_val, seed):
    """Split (x (N, ...), y (N,)) into (train pair of N - n_val, validation pair of n_val).

    The examples are chosen by ``np.random.default_rng(seed).permutation(N)``: its first ``n_val``
    entries go to validation. Both parts keep the original order among their own examples (indices
    sorted), so only the seed decides which examples go where. n_val = 0 gives (pair, None).
    """
    if n_val == 0:
        return pair, None
    x, y = pair
    perm = np.random.default_rng(seed).permutation(len(y))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx])


def images_to_split(images, labels, flatten) -> Split:
    """uint8 images (N, H, W) or (N, C, H, W) and labels (N,) -> Split of new float32 x and int64 y.

    x is in [0, 1], of shape (N, C, H, W) (C = 1 for (N, H, W) input), or (N, C*H*W) if ``flatten``.
    """
    x = images.astype(np.float32)  # a new array: a cached uint8 original stays untouched
    x /= 255
    x = x.reshape(len(x), -1) if flatten else x.reshape(len(x), -1, *images.shape[-2:])
    return Split(x=x, y=labels.astype(np.int64))
