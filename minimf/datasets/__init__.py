"""Data sets for minimf. One file, one idea:

    idx.py        the IDX format (MNIST, Fashion-MNIST)
    mnist.py      the packaged MNIST and ``load_mnist``
    common.py     ``DatasetError``, ``Split``, checksums, the validation split
"""
from minimf.datasets.common import (
    DatasetError,
    Split,
    carve_validation,
    check_same_count,
    check_validation_size,
    images_to_split,
    sha256_hex,
    verify_sha256,
)
from minimf.datasets.idx import IMAGES_MAGIC, LABELS_MAGIC, parse_idx, read_gzip, read_idx
from minimf.datasets.mnist import (
    MNIST_FILES,
    MNIST_MEAN,
    MNIST_SHA256,
    MNIST_STD,
    PACKAGED_MNIST_DIR,
    MnistData,
    clear_cache,
    load_mnist,
)
