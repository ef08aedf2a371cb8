"""The data sets minimf knows: where their files come from, their checksums, shapes and statistics.

Every downloaded file is listed as a ``RemoteFile``: its name in the cache, its size in bytes, the
SHA-256 of the file exactly as published (the compressed archive, not its content), and its addresses,
tried in order. A file is used only after its size and SHA-256 match these values (a file placed by
hand, for which no SHA-256 is known, after its size and its authors' MD5 match: PathMNIST, below).

Where the checksums come from
-----------------------------
Each value below is copied from published sources that agree with one another:

* Fashion-MNIST: SHA-256 and sizes from TensorFlow Datasets, ``tensorflow_datasets/url_checksums/
  fashion_mnist.txt`` (url, size, sha256 of the four files on the zalando research S3 site). The MD5s
  are the ones in the README of github.com/zalandoresearch/fashion-mnist (also torchvision's).
* CIFAR-10 and CIFAR-100, python versions: SHA-256 from TensorFlow Datasets, ``tensorflow_datasets/
  url_checksums/cifar10.csv`` and ``cifar100.csv`` (the python archives; later TFDS versions switched
  to the binary archives), the same values as ``file_hash`` in Keras' ``datasets/cifar10.py`` and
  ``cifar100.py`` and ``_SHA256`` in torchvision's prototype ``datasets/_builtin/cifar.py``. The MD5s
  are the ones on https://www.cs.toronto.edu/~kriz/cifar.html. The sizes (170,498,071 and 169,001,437
  bytes) are the Content-Length that www.cs.toronto.edu sends, as recorded in many public download logs
  (wget, torchvision and Keras progress output); the page itself only says "163 MB" and "161 MB".

* PathMNIST (MedMNIST v2, 28 x 28): NO SHA-256 is published and none could be verified here, so
  minimf never downloads it: the file is placed by hand (``page`` says where to get it). It is checked
  against its size and the MD5 the MedMNIST authors publish (``INFO["pathmnist"]["MD5"]`` in
  ``medmnist/info.py`` of github.com/MedMNIST/MedMNIST, unchanged from Zenodo record 6496656 to
  10519652); the size, 205,615,438 bytes, is that record's file as a public download log records it
  (medmnist's progress bar, "205615438/205615438", followed by its MD5 check passing). MD5 catches a
  damaged or different file, not a deliberately forged one; a SHA-256 can replace it here once one is
  verified, and then the file may be given its address and downloaded like the others.

Mirrors
-------
Fashion-MNIST is published on the zalando research S3 site and in its GitHub repository
(``data/fashion/``); the README names both, and third-party code checks the same MD5s against either.
CIFAR has one official address, www.cs.toronto.edu; no second mirror is listed, since none is known to
serve the identical archive. A mirror that serves different bytes is caught by the checksum anyway.

Normalisation
-------------
``mean`` and ``std`` are per channel, over all training pixels scaled to [0, 1]. MNIST's are the
classic values (recomputed from the packaged copy by the tests). The others are published values,
recomputed by many (e.g. the CIFAR-10 std 0.2470, 0.2435, 0.2616 is the pixel-level std; the often
copied 0.2023, 0.1994, 0.2010 is an average of per-image stds); ``tests/test_loaders.py`` recomputes
them where the real files are cached (``pytest -m slow``). Tabular data sets have no constants: they
are standardised with the mean and std of each feature over their training split. PathMNIST has none
either (no published values could be checked): its images are standardised per channel with the mean
and std over the training split in use.
"""
from typing import NamedTuple

FASHION_S3 = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_GITHUB = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
TORONTO = "https://www.cs.toronto.edu/~kriz/"
MEDMNIST_ZENODO = "https://zenodo.org/records/10519652"   # MedMNIST v2 (its files unchanged in v3)


class RemoteFile(NamedTuple):
    """One file to download: cache name, size in bytes, SHA-256 as published, addresses in order.

    A file without a verified SHA-256 (``sha256`` empty) is never downloaded, whatever its ``urls``: it
    is placed by hand, from ``page``, and checked against its size and the MD5 its authors publish
    (minimf/datasets/download.py)."""

    name: str
    size: int
    sha256: str
    urls: tuple
    md5: str = ""  # as published by the data set's authors; checked only where no SHA-256 is known
    page: str = ""  # where to get the file by hand (shown when it is missing)

    @property
    def by_hand(self) -> bool:
        """True when minimf must not download this file itself: no verified SHA-256 is known."""
        return not self.sha256


class DatasetInfo(NamedTuple):
    """What a data set is; ``files`` is empty for MNIST (packaged) and the tabular sets (scikit-learn)."""

    name: str                 # the name for load() and --dataset
    title: str                # for printing
    kind: str                 # "image" (x is (N, C, H, W)) or "tabular" (x is (N, D))
    input_shape: tuple        # (C, H, W) or (D,)
    num_classes: int          # fine labels for CIFAR-100
    sizes: dict               # {"train": N_train, "test": N_test} (and "val": N_val where one is published)
    mean: tuple = None        # per channel, pixels in [0, 1]; None: computed from the training split
    std: tuple = None
    files: tuple = ()         # RemoteFile, ...
    coarse_classes: int = 0   # CIFAR-100's 20 superclasses
    source: str = ""          # who made it, where it lives


def _fashion(name, size, sha256, md5):
    return RemoteFile(name, size, sha256, (FASHION_S3 + name, FASHION_GITHUB + name), md5)


DATASETS = {
    "mnist": DatasetInfo(
        "mnist", "MNIST", "image", (1, 28, 28), 10, {"train": 60000, "test": 10000},
        mean=(0.1307,), std=(0.3081,),
        source="Y. LeCun, C. Cortes, C. J. C. Burges; packaged in minimf/data/mnist (CC BY-SA 3.0)"),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "Fashion-MNIST", "image", (1, 28, 28), 10, {"train": 60000, "test": 10000},
        mean=(0.2860,), std=(0.3530,),
        files=(
            _fashion("train-images-idx3-ubyte.gz", 26421880,
                     "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                     "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            _fashion("train-labels-idx1-ubyte.gz", 29515,
                     "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                     "25c81989df183df01b3e8a0aad5dffbe"),
            _fashion("t10k-images-idx3-ubyte.gz", 4422102,
                     "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                     "bef4ecab320f06d8554ea6380940ec79"),
            _fashion("t10k-labels-idx1-ubyte.gz", 5148,
                     "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                     "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        source="H. Xiao, K. Rasul, R. Vollgraf (Zalando Research), arXiv:1708.07747; MIT licence"),
    "cifar10": DatasetInfo(
        "cifar10", "CIFAR-10", "image", (3, 32, 32), 10, {"train": 50000, "test": 10000},
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        files=(RemoteFile("cifar-10-python.tar.gz", 170498071,
                          "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                          (TORONTO + "cifar-10-python.tar.gz",), "c58f30108f718f92721af3b95e74349a"),),
        source="A. Krizhevsky, V. Nair, G. Hinton; https://www.cs.toronto.edu/~kriz/cifar.html"),
    "cifar100": DatasetInfo(
        "cifar100", "CIFAR-100", "image", (3, 32, 32), 100, {"train": 50000, "test": 10000},
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        files=(RemoteFile("cifar-100-python.tar.gz", 169001437,
                          "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
                          (TORONTO + "cifar-100-python.tar.gz",), "eb9058c3a382ffc7106e4002c42a8d85"),),
        coarse_classes=20,
        source="A. Krizhevsky, V. Nair, G. Hinton; https://www.cs.toronto.edu/~kriz/cifar.html"),
    "pathmnist": DatasetInfo(
        "pathmnist", "PathMNIST (MedMNIST v2, 28 x 28 colon pathology)", "image", (3, 28, 28), 9,
        {"train": 89996, "val": 10004, "test": 7180},
        files=(RemoteFile("pathmnist.npz", 205615438, "", (), md5="a8b06965200029087d5bd730944a56c1",
                          page=MEDMNIST_ZENODO + "/files/pathmnist.npz?download=1"),),
        source="J. Yang et al., MedMNIST v2, Scientific Data 10:41 (2023), from J. N. Kather et al.'s "
               "NCT-CRC-HE-100K and CRC-VAL-HE-7K; CC BY 4.0; " + MEDMNIST_ZENODO),
    # scikit-learn's bundled copies; 1/5 of the rows (N // 5) form the test split, see tabular.py
    "breast-cancer": DatasetInfo(
        "breast-cancer", "Breast Cancer Wisconsin (diagnostic)", "tabular", (30,), 2,
        {"train": 456, "test": 113},
        source="W. H. Wolberg, W. N. Street, O. L. Mangasarian (UCI); scikit-learn's bundled copy"),
    "digits": DatasetInfo(
        "digits", "Digits (8x8, UCI optical recognition)", "tabular", (64,), 10,
        {"train": 1438, "test": 359},
        source="E. Alpaydin, C. Kaynak (UCI); scikit-learn's bundled copy"),
}


def dataset_info(name) -> DatasetInfo:
    """The ``DatasetInfo`` of ``name``; a ValueError lists the known names."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}") from None


def num_classes(name, labels="fine") -> int:
    """Number of classes of ``name``: CIFAR-100 has 100 fine and 20 coarse ones."""
    info = dataset_info(name)
    check_labels_option(info, labels)
    return info.coarse_classes if labels == "coarse" else info.num_classes


def check_labels_option(info, labels):
    """``labels`` is "fine", or "coarse" for a data set that has coarse labels (CIFAR-100)."""
    if labels == "fine":
        return
    if labels != "coarse":
        raise ValueError(f"labels must be 'fine' or 'coarse', got {labels!r}")
    if not info.coarse_classes:
        raise ValueError(f"{info.name} has no coarse labels; only cifar100 does")
