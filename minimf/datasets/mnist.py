"""MNIST, packaged with minimf: the four IDX files of ``minimf/data/mnist/``, no download.

``read_mnist_pair`` reads one split's images and labels with the IDX parser of ``idx.py``, checks that
they pair up, and verifies the SHA-256 of each file's *uncompressed* content. Checks run from the most
specific to the most general (gzip container, IDX header, data length, image/label pairing, then the
checksum), so a damaged file is reported by its most precise fault. Every failure raises
``DatasetError``, whose message names the file and what is wrong with it. ``load("mnist", split)``
(``minimf.datasets``) is the way to get the pixels as float32.
"""
from pathlib import Path

from minimf.datasets.common import check_same_count, verify_sha256
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


def mnist_pairs(folder):
    """{split: (images path, labels path)} of the four standard ``.gz`` files in ``folder``."""
    folder = Path(folder)
    return {split: (folder / f"{images}.gz", folder / f"{labels}.gz")
            for split, (images, labels) in MNIST_FILES.items()}


def read_mnist_pair(images_path, labels_path):
    """Read, parse and check one split: (images uint8 (N, 28, 28), labels uint8 (N,)), both read-only.

    The checksums come last (see the module docstring); a file's name (less ``.gz``) picks its sum.
    """
    images_raw, labels_raw = read_gzip(images_path), read_gzip(labels_path)
    images = parse_idx(images_raw, IMAGES_MAGIC, images_path)
    labels = parse_idx(labels_raw, LABELS_MAGIC, labels_path)
    check_same_count(images, labels, images_path, labels_path)
    verify_sha256(images_raw, MNIST_SHA256[images_path.stem], images_path)
    verify_sha256(labels_raw, MNIST_SHA256[labels_path.stem], labels_path)
    return images, labels
