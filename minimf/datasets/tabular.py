"""Tabular data sets from scikit-learn's bundled copies (no download): Breast Cancer Wisconsin and Digits.

scikit-learn is an optional extra (``pip install "minimf[tabular]"``). Neither data set comes with a
train/test split, so minimf fixes one: ``np.random.default_rng(0).permutation(N)``, whose first N // 5
rows (sorted) are the test split and the rest the training split. The sizes are checked against
``catalog.py``, so a changed copy is noticed. x is float32 (N, D) as published (no scaling: features are
standardised with training-split statistics, see ``normalization``), y is int64.

    breast-cancer   569 rows, 30 features (cell nuclei measurements), 2 classes (0 malignant, 1 benign)
    digits          1,797 rows, 64 features (8 x 8 images, values 0-16), 10 classes
"""
import numpy as np

from minimf.datasets.common import DatasetError, verify_labels

TEST_FRACTION = 5  # one row in five is a test row
SPLIT_SEED = 0

_LOADERS = {"breast-cancer": "load_breast_cancer", "digits": "load_digits"}


def sklearn_version():
    """scikit-learn's version, or None where it is not installed."""
    try:
        import sklearn
    except ImportError:
        return None
    return sklearn.__version__


def read_tabular(info):
    """{"train": (x float32 (N, D), y int64 (N,)), "test": (...)} of the tabular data set ``info``."""
    try:
        from sklearn import datasets as sk_datasets
    except ImportError:
        raise DatasetError(f"{info.name} comes from scikit-learn, which is not installed: "
                           f'pip install "minimf[tabular]" (or pip install scikit-learn)') from None
    bunch = getattr(sk_datasets, _LOADERS[info.name])()
    x, y = np.asarray(bunch.data, dtype=np.float32), np.asarray(bunch.target, dtype=np.int64)
    n_expected = info.sizes["train"] + info.sizes["test"]
    if x.shape != (n_expected, *info.input_shape) or y.shape != (n_expected,):
        raise DatasetError(f"{info.name}: scikit-learn's copy has shape {x.shape}, expected "
                           f"{(n_expected, *info.input_shape)}")
    verify_labels(y, info.num_classes, f"{info.name} (scikit-learn)")
    test_idx, train_idx = split_indices(n_expected)
    return {"train": (x[train_idx], y[train_idx]), "test": (x[test_idx], y[test_idx])}


def split_indices(n):
    """(test indices, train indices) of a data set of ``n`` rows, each sorted; n // 5 test rows."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = n // TEST_FRACTION
    return np.sort(perm[:n_test]), np.sort(perm[n_test:])
