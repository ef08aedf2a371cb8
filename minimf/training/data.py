"""A data set made ready for training: loaded, split, standardised, on the backend, checked once.

    data = prepare_data("mnist", xp, train_subset=5000)      # {"train": (x, y), "test": (x, y), "validation": None}
    data = data_for(config, xp)                              # the same from a RunConfig

x is (N, D) with ``flatten=True`` (for an MLP; images flattened to C*H*W) and (N, C, H, W)
otherwise (for a CNN); y is (N,) integer labels. The values of every split are checked here, once
(finite features, labels in range: two host synchronisations per split), so that training and
evaluation need not check them batch by batch (``validate=False``; no host sync in a step).
"""
from minimf.checks import check_features, check_labels
from minimf.datasets import DatasetError, carve_validation, load, normalization, num_classes


def prepare_data(dataset, xp, *, flatten=True, labels="fine", data_dir=None, validation=0, seed=0,
                 train_subset=None, test_subset=None, normalize=True, progress=True):
    """The splits of ``dataset`` as backend arrays: {"train": (x, y), "test": (x, y), "validation":
    (x, y) or None}.

    ``validation`` examples are carved out of the training split by ``carve_validation`` (with
    ``seed``), then ``train_subset`` and ``test_subset`` keep the first examples. With ``normalize``
    every split is standardised with the data set's per-channel constants (tabular data: the mean
    and std of each feature over the training examples used). x is float32.
    """
    options = dict(data_dir=data_dir, flatten=flatten, labels=labels, progress=progress)
    train, held_out = carve_validation(load(dataset, "train", **options), validation, seed)
    splits = {"train": first(train, train_subset),
              "test": first(load(dataset, "test", **options), test_subset),
              "validation": held_out}
    if normalize:
        mean, std = normalization(dataset, x_train=splits["train"][0], flatten=flatten)
    out = {}
    for name, split in splits.items():
        if split is None:
            out[name] = None
            continue
        x, y = split
        if normalize:
            x = (x - mean) / std
        out[name] = check_split(name, dataset, xp.asarray(x, dtype="float32"), xp.asarray(y),
                                num_classes(dataset, labels), xp)
    return out


def data_for(config, xp):
    """``prepare_data`` with the settings of a RunConfig (flattened for the MLP)."""
    return prepare_data(config.dataset, xp, flatten=config.arch == "mlp", labels=config.labels,
                        data_dir=config.data_dir, validation=config.validation, seed=config.seed,
                        train_subset=config.train_subset, test_subset=config.test_subset,
                        normalize=not config.no_normalize, progress=not config.no_progress)


def check_split(name, dataset, x, y, classes, xp):
    """The values of a whole split checked once; a damaged split is a DatasetError. Returns (x, y)."""
    try:
        check_features(x, x.shape[1:], xp, "float32")
        check_labels(y, x.shape[0], classes, xp)
    except ValueError as err:
        raise DatasetError(f"the {name} split of {dataset} is damaged: {err}") from None
    return x, y


def first(split, n):
    """The first n examples of an (x, y) pair (all of them for n=None)."""
    x, y = split
    return (x, y) if n is None else (x[:n], y[:n])
