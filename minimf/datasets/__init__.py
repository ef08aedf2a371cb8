"""Data sets of MF v1 (Tables 2, 3 and 6): MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100, and tabular data;
and PathMNIST, MF v2's Mixer benchmark.

    from minimf.datasets import load, normalization
    train = load("cifar10", "train")       # Split(x float32 (50000, 3, 32, 32) in [0, 1], y int64 (50000,))
    test = load("cifar10", "test", flatten=True)           # x (10000, 3072), for an MLP
    mean, std = normalization("cifar10", flatten=True)     # x_normalised = (x - mean) / std

``load`` is the one way to read a data set; ``load_mnist`` gives MNIST's splits in one call, flattened
for an MLP by default, as the lessons use it.

Names: ``mnist`` (packaged with minimf), ``fashion-mnist``, ``cifar10``, ``cifar100`` (``labels="coarse"``
for its 20 superclasses) downloaded on first use into ``$MINIMF_DATA`` or a per-user cache,
``pathmnist`` (placed there by hand as ``<cache>/pathmnist/pathmnist.npz``: no SHA-256 of it is
published, so minimf never downloads it; ``load("pathmnist", "val")`` gives its validation split), and
``breast-cancer`` and ``digits`` from scikit-learn (an optional extra). On the command line::

    python -m minimf.datasets list                 # what is cached, sizes, verified or not
    python -m minimf.datasets download cifar10     # or several names, or "all"

One file, one idea:

    catalog.py    the data sets: files, addresses, SHA-256 checksums (and their sources), shapes, statistics
    download.py   the cache folder; resumable, locked, verified downloads with atomic renames
    idx.py        the IDX format (MNIST, Fashion-MNIST)
    mnist.py      the packaged MNIST: its files and their checksums
    cifar.py      CIFAR's pickled batches in tar.gz, read with an unpickler that runs no code
    medmnist.py   MedMNIST's .npz archives (PathMNIST), read with allow_pickle=False
    tabular.py    scikit-learn's Breast Cancer and Digits, with a fixed train/test split
    augment.py    random crops and flips on NumPy/CuPy arrays
    common.py     ``DatasetError``, ``Split``, file keys, checksums, label checks, the validation split
"""
from typing import NamedTuple

import numpy as np

from minimf.datasets.catalog import DATASETS, DatasetInfo, RemoteFile, check_labels_option, dataset_info, num_classes
from minimf.datasets.cifar import read_cifar
from minimf.datasets.common import (
    DatasetError,
    Split,
    carve_validation,
    check_validation_size,
    file_key,
    images_to_split,
)
from minimf.datasets.download import DownloadError, data_home, fetch
from minimf.datasets.idx import read_image_pair
from minimf.datasets.medmnist import read_medmnist
from minimf.datasets.mnist import MNIST_MEAN, MNIST_STD, PACKAGED_MNIST_DIR, mnist_pairs, read_mnist_pair
from minimf.datasets.tabular import read_tabular

SPLITS = ("train", "test")

__all__ = [
    "load", "normalization", "clear_cache", "load_mnist", "MnistData", "DATASETS", "DatasetInfo", "RemoteFile",
    "dataset_info", "num_classes", "DatasetError", "DownloadError", "Split", "MNIST_MEAN", "MNIST_STD",
    "PACKAGED_MNIST_DIR", "data_home", "fetch", "carve_validation", "check_validation_size",
]

# files' key -> their parsed arrays, e.g. {"train": (x, {"fine": y, ...}), "test": ...}. The key holds
# each file's (path, mtime, size), so a file changed on disk is read again. Arrays here are never handed
# out: load() returns copies.
_CACHE = {}


def clear_cache() -> None:
    """Forget every parsed file, so the next load reads and verifies from disk again."""
    _CACHE.clear()


def load(name, split="train", data_dir=None, *, flatten=False, labels="fine", download=True,
         progress=True) -> Split:
    """Load one split of a data set as host NumPy arrays: ``Split(x, y)``.

    Images: x float32 in [0, 1] of shape (N, C, H, W), or (N, C*H*W) with ``flatten``. Tabular data:
    x float32 (N, D) as published. y: int64 (N,). ``split`` is "train" or "test" (see
    ``carve_validation`` for a validation split), or "val" for a data set that publishes one (PathMNIST).
    ``labels="coarse"`` gives CIFAR-100's 20 superclasses.

    ``data_dir`` is the cache root (default ``$MINIMF_DATA`` or a per-user cache); each data set has a
    subfolder there. MNIST is read from the copy packaged with minimf unless ``data_dir`` is given.
    Missing files are downloaded (``download=False``: a ``DownloadError`` says what to fetch by hand),
    and every file is verified against its SHA-256 before it is parsed. PathMNIST is never downloaded:
    its file is placed by hand, checked against the authors' MD5 (no SHA-256 is published), and a
    missing one is a ``DownloadError`` that says where to get it and where to put it (catalog.py).
    Every call returns new arrays.
    """
    info = dataset_info(name)
    if split not in splits_of(info):
        raise ValueError(f"split must be {' or '.join(map(repr, splits_of(info)))}, got {split!r}")
    check_labels_option(info, labels)
    x, y = _parsed(info, data_dir, download, progress)[split]
    y = y[labels]
    if info.kind == "tabular":
        return Split(x=x.copy(), y=y.copy())
    return images_to_split(x, y, flatten)


def splits_of(info):
    """The split names ``load`` accepts for ``info``: SPLITS, and "val" where the data set publishes one."""
    return ("train", "val", "test") if "val" in info.sizes else SPLITS


class MnistData(NamedTuple):
    """The three splits of ``load_mnist``; ``validation`` is None unless ``validation_size > 0``."""

    train: Split
    validation: Split | None
    test: Split


def load_mnist(*, flatten=True, validation_size=0, seed=0, data_dir=None) -> MnistData:
    """MNIST's splits in one call, as the lessons use it: ``MnistData(train, validation, test)``.

    ``load("mnist", "train")`` and ``load("mnist", "test")``, then ``carve_validation``: x float32 in
    [0, 1], flattened to (N, 784) for an MLP by default (``flatten=False``: (N, 1, 28, 28), as ``load``
    gives by default); y int64 (N,). ``validation_size`` training examples, chosen by
    ``np.random.default_rng(seed).permutation``, are moved out of train into ``validation`` (None
    when 0). ``data_dir`` is the cache root, as for ``load``; None means the copy packaged with minimf.
    """
    n_val = check_validation_size(validation_size, n_train=DATASETS["mnist"].sizes["train"])
    train = load("mnist", "train", data_dir, flatten=flatten)
    test = load("mnist", "test", data_dir, flatten=flatten)
    train, validation = carve_validation(train, n_val, seed)
    return MnistData(train=Split(*train), validation=None if validation is None else Split(*validation),
                     test=test)


# --- reading and caching the files ------------------------------------------------------------------

def _parsed(info, data_dir, download, progress):
    """{split: (x, {"fine": y[, "coarse": y]})} of ``info``, parsed once per process and file version."""
    if info.kind == "tabular":
        key = ("tabular", info.name)
        if key not in _CACHE:
            _CACHE[key] = {s: _with_fine(x, y) for s, (x, y) in read_tabular(info).items()}
        return _CACHE[key]
    if info.name == "mnist":
        folder = PACKAGED_MNIST_DIR if data_dir is None else data_home(data_dir) / "mnist"
        return {split: _with_fine(*_cached(pair, lambda: read_mnist_pair(*pair)))
                for split, pair in mnist_pairs(folder).items()}
    folder = data_home(data_dir) / info.name
    paths = [fetch(f, folder, label=info.name, download=download, progress=progress) for f in info.files]
    return _cached(paths, lambda: _READERS[info.name](info, paths))


def _cached(paths, read):
    """What ``read()`` returns, called once per process and version of the files at ``paths``."""
    key = tuple(file_key(path) for path in paths)
    if key not in _CACHE:
        _CACHE[key] = read()
    return _CACHE[key]


def _with_fine(x, labels):
    return x, {"fine": labels}


def _read_fashion(info, paths):
    """Fashion-MNIST's four IDX files, in catalog order: train images, train labels, test images, test labels."""
    out = {}
    for split, (images_path, labels_path) in zip(SPLITS, (paths[:2], paths[2:])):
        images, labels = read_image_pair(images_path, labels_path, info.num_classes)
        if images.shape[1:] != info.input_shape[1:]:
            raise DatasetError(f"{images_path}: images of {images.shape[1:]} pixels, "
                               f"expected {info.input_shape[1:]}")
        out[split] = _with_fine(images, labels)
    return out


def _read_cifar(info, paths):
    return read_cifar(paths[0], info.name)


def _read_medmnist(info, paths):
    return {split: _with_fine(*pair)
            for split, pair in read_medmnist(paths[0], info.input_shape, info.num_classes).items()}


_READERS = {"fashion-mnist": _read_fashion, "cifar10": _read_cifar, "cifar100": _read_cifar,
            "pathmnist": _read_medmnist}


def normalization(name, x_train=None, flatten=False):
    """(mean, std) as float32 arrays that broadcast against x: ``x_normalised = (x - mean) / std``.

    Image data sets: the per-channel constants of catalog.py, shaped (C, 1, 1) for x (N, C, H, W), or
    repeated to (C*H*W,) for flattened x. Tabular data sets: the mean and std of each feature over
    ``x_train`` (N, D), the training split (required), shaped (D,); a constant feature gets std 1.
    """
    info = dataset_info(name)
    if info.kind == "image" and info.mean is None:
        return _channel_statistics(info, x_train, flatten)
    if info.kind == "tabular":
        if x_train is None:
            raise ValueError(f"{name} is tabular: pass x_train, its features are standardised with "
                             f"the training split's statistics")
        x_train = np.asarray(x_train, dtype=np.float64)
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0
        return mean.astype(np.float32), std.astype(np.float32)
    C, H, W = info.input_shape
    mean = np.asarray(info.mean, dtype=np.float32).reshape(C, 1, 1)
    std = np.asarray(info.std, dtype=np.float32).reshape(C, 1, 1)
    if flatten:
        mean, std = np.repeat(mean.reshape(C), H * W), np.repeat(std.reshape(C), H * W)
    return mean, std


def _channel_statistics(info, x_train, flatten, chunk=4096):
    """(mean, std) per channel over ``x_train`` (N, C, H, W) or (N, C*H*W), for an image data set that
    has no published constants (PathMNIST), shaped as ``normalization`` shapes the constants.

    Sums of x and x^2 in float64, ``chunk`` examples at a time (the whole PathMNIST training split in
    float64 would be 1.7 GB): var = E[x^2] - E[x]^2, exact enough for pixels in [0, 1]."""
    if x_train is None:
        raise ValueError(f"{info.name} has no published per-channel constants: pass x_train, its channels are "
                         f"standardised with the training split's mean and std")
    C, H, W = info.input_shape
    x_train = np.asarray(x_train).reshape(len(x_train), C, H * W)
    total, squares = np.zeros(C), np.zeros(C)
    for start in range(0, len(x_train), chunk):
        part = x_train[start:start + chunk].astype(np.float64)
        total += part.sum(axis=(0, 2))
        squares += (part * part).sum(axis=(0, 2))
    count = len(x_train) * H * W
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0))
    std[std == 0] = 1.0
    mean, std = mean.astype(np.float32).reshape(C, 1, 1), std.astype(np.float32).reshape(C, 1, 1)
    if flatten:
        mean, std = np.repeat(mean.reshape(C), H * W), np.repeat(std.reshape(C), H * W)
    return mean, std
