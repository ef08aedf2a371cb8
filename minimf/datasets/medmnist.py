"""MedMNIST's 2-D data sets (PathMNIST here): one NumPy ``.npz`` archive per data set, read without
unpickling anything.

``pathmnist.npz`` (MedMNIST v2, https://zenodo.org/records/10519652) holds six arrays::

    train_images  uint8 (89996, 28, 28, 3)   val_images  (10004, 28, 28, 3)   test_images  (7180, 28, 28, 3)
    train_labels  uint8 (89996, 1)           val_labels  (10004, 1)           test_labels  (7180, 1)

images as (N, H, W, C) (gray-scale sets of MedMNIST: (N, H, W)), one label column per image, in
[0, 9) for PathMNIST's nine tissue classes (adipose, background, debris, lymphocytes, mucus,
smooth muscle, normal colon mucosa, cancer-associated stroma, colorectal adenocarcinoma epithelium).
The training and validation images come from NCT-CRC-HE-100K (split 9:1 by the MedMNIST authors), the
test images from CRC-VAL-HE-7K, another clinical centre.

``np.load(..., allow_pickle=False)``: an ``.npz`` member that is an object array (a pickle, which can
run code when loaded) is refused; only plain numeric arrays are read. Every fault (not a zip archive,
a member missing, an object array, a wrong shape or dtype, a label out of range, counts that differ)
raises ``DatasetError`` naming the file and the member. The archive's checksum is checked before any
of this (minimf/datasets/download.py).
"""
import zipfile
from pathlib import Path

import numpy as np

from minimf.datasets.common import DatasetError, check_same_count, verify_labels

SPLIT_PREFIXES = {"train": "train", "val": "val", "test": "test"}   # minimf's split name -> the members' prefix


def read_medmnist(path, image_shape, num_classes):
    """Read a MedMNIST ``.npz``: {"train" | "val" | "test": (images uint8 (N, C, H, W), labels int64 (N,))}.

    ``image_shape`` is one image's (C, H, W) as the catalog gives it; every split must match it.
    """
    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):   # np.load would read a .npy file, or try a pickle, instead
            raise DatasetError(f"{path}: not an .npz (zip) archive")
        with np.load(path, allow_pickle=False) as archive:
            members = set(archive.files)
            out = {}
            for split, prefix in SPLIT_PREFIXES.items():
                images = _member(archive, members, f"{prefix}_images", path)
                labels = _member(archive, members, f"{prefix}_labels", path)
                out[split] = (_images(images, image_shape, f"{path}:{prefix}_images"),
                              _labels(labels, num_classes, f"{path}:{prefix}_labels"))
                check_same_count(out[split][0], out[split][1], f"{path}:{prefix}_images", f"{path}:{prefix}_labels")
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing file") from None
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise DatasetError(f"{path}: not a readable .npz archive ({type(err).__name__}: {err})") from None
    return out


def _member(archive, members, name, path):
    if name not in members:
        raise DatasetError(f"{path}: the archive has no array {name!r} (it has {', '.join(sorted(members))})")
    try:
        return archive[name]
    except ValueError as err:           # "Object arrays cannot be loaded when allow_pickle=False", or a bad header
        raise DatasetError(f"{path}:{name}: refused ({err})") from None
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise DatasetError(f"{path}:{name}: damaged ({type(err).__name__}: {err})") from None


def _images(images, image_shape, source):
    """uint8 (N, H, W, C), or (N, H, W) for one channel -> (N, C, H, W), checked against ``image_shape``."""
    C, H, W = image_shape
    expected = (H, W) if C == 1 else (H, W, C)
    if images.dtype != np.uint8 or tuple(images.shape[1:]) not in {expected, (H, W, C)}:
        raise DatasetError(f"{source}: expected uint8 images of shape (N, {', '.join(map(str, expected))}), "
                           f"found {images.dtype} of shape {images.shape}")
    images = images.reshape(len(images), H, W, C)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def _labels(labels, num_classes, source):
    """Integer labels (N, 1) or (N,) -> int64 (N,), each in [0, num_classes)."""
    if labels.dtype.kind not in "iu" or not (labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1)):
        raise DatasetError(f"{source}: expected integer labels of shape (N, 1), found {labels.dtype} of shape "
                           f"{labels.shape} (a multi-label MedMNIST set is not a {num_classes}-class task)")
    labels = labels.reshape(-1).astype(np.int64)
    verify_labels(labels, num_classes, source)
    return labels
