"""Tests for minimf.datasets: the packaged MNIST copy, the IDX parser and every error it reports.

Error tests load from a cache root in ``tmp_path`` whose ``mnist`` folder links (or copies) the four
packaged files and replaces one of them with a damaged version. Untouched files are symlinks, so the
loader's cache (keyed by the resolved path) serves them without parsing 47 MB again; where symlinks are
not allowed they are copied.
"""
import collections
import gzip
import shutil
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimf import datasets
from minimf.datasets import MNIST_MEAN, MNIST_STD, DatasetError, carve_validation, load, load_mnist
from minimf.datasets.common import check_same_count, sha256_hex
from minimf.datasets.idx import IMAGES_MAGIC, LABELS_MAGIC, parse_idx, read_idx
from minimf.datasets.mnist import MNIST_SHA256

TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------

def packaged_raw(name):
    """The uncompressed bytes of a packaged file, e.g. ``packaged_raw("t10k-labels-idx1-ubyte")``."""
    return gzip.decompress((datasets.PACKAGED_MNIST_DIR / f"{name}.gz").read_bytes())


def gz(data):
    """gzip ``data`` quickly and reproducibly."""
    return gzip.compress(data, compresslevel=1, mtime=0)


def encode_idx(array, magic):
    """The IDX bytes of a uint8 ``array`` (the inverse of ``parse_idx``)."""
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def replace(folder, name, gz_bytes):
    """Put ``gz_bytes`` at ``folder/name.gz``; unlink first so a symlink's target is never written."""
    path = folder / f"{name}.gz"
    path.unlink()
    path.write_bytes(gz_bytes)
    return path


@pytest.fixture
def mnist_dir(tmp_path):
    """``tmp_path/mnist``, holding the four standard MNIST files (symlinks to the packaged copy, else
    copies): ``load("mnist", split, data_dir=tmp_path)`` reads them."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for src in datasets.PACKAGED_MNIST_DIR.glob("*.gz"):
        try:
            (folder / src.name).symlink_to(src)
        except OSError:
            shutil.copyfile(src, folder / src.name)
    return folder


def assert_dataset_error(path, *phrases):
    """Loading MNIST from the cache root above ``path``'s folder raises ``DatasetError`` whose message
    names ``path`` and contains each phrase."""
    with pytest.raises(DatasetError) as info:
        load("mnist", "test", data_dir=path.parent.parent)
    message = str(info.value)
    assert str(path) in message, message
    for phrase in phrases:
        assert phrase in message, message
    return message


# ---------------------------------------------------------------------------------------------------
# The real packaged data
# ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist_train():
    return load("mnist", "train", flatten=True)


@pytest.fixture(scope="module")
def mnist_test():
    return load("mnist", "test", flatten=True)


def test_shapes_and_dtypes(mnist_train, mnist_test):
    assert mnist_train.x.shape == (60000, 784) and mnist_train.y.shape == (60000,)
    assert mnist_test.x.shape == (10000, 784) and mnist_test.y.shape == (10000,)
    for split in (mnist_train, mnist_test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert isinstance(split.x, np.ndarray) and isinstance(split.y, np.ndarray)


def test_pixel_range_and_labels(mnist_train, mnist_test):
    for split in (mnist_train, mnist_test):
        assert split.x.min() == 0.0 and split.x.max() == 1.0
        assert set(np.unique(split.y)) == set(range(10))
    assert np.bincount(mnist_train.y).tolist() == TRAIN_LABEL_COUNTS


def test_train_pixel_statistics_match_constants(mnist_train):
    mean, std = mnist_train.x.mean(dtype=np.float64), mnist_train.x.std(dtype=np.float64)
    print(f"mean {mean:.6f} (MNIST_MEAN {MNIST_MEAN}), std {std:.6f} (MNIST_STD {MNIST_STD})")
    assert mean == pytest.approx(MNIST_MEAN, abs=1e-4)
    assert std == pytest.approx(MNIST_STD, abs=1e-4)


def test_unflattened_shape_holds_the_same_pixels(mnist_train):
    images = load("mnist", "train")
    assert images.x.shape == (60000, 1, 28, 28) and load("mnist", "test").x.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(images.x.reshape(60000, 784), mnist_train.x)


def test_read_idx_returns_header_shape():
    images = read_idx(datasets.PACKAGED_MNIST_DIR / f"{TEST_IMAGES}.gz", IMAGES_MAGIC)
    labels = read_idx(datasets.PACKAGED_MNIST_DIR / f"{TEST_LABELS}.gz", LABELS_MAGIC)
    assert images.dtype == np.uint8 and images.shape == (10000, 28, 28)
    assert labels.dtype == np.uint8 and labels.shape == (10000,)


def test_packaged_files_match_their_checksums():
    for name, expected in MNIST_SHA256.items():
        assert sha256_hex(packaged_raw(name)) == expected, name


# ---------------------------------------------------------------------------------------------------
# Validation split
# ---------------------------------------------------------------------------------------------------

def rows(x):
    """The multiset of the rows of x (N, D), to compare splits by content."""
    return collections.Counter(row.tobytes() for row in x)


def test_validation_split_is_a_partition_of_train(mnist_train):
    (x, y), (x_val, y_val) = carve_validation(mnist_train, 5000, seed=1)
    assert x.shape == (55000, 784) and y.shape == (55000,)
    assert x_val.shape == (5000, 784) and y_val.shape == (5000,)
    assert x_val.dtype == np.float32 and y_val.dtype == np.int64
    # Together they hold exactly the 60,000 training examples, each once: disjoint and complete.
    assert rows(x) + rows(x_val) == rows(mnist_train.x)
    counts = np.bincount(y, minlength=10) + np.bincount(y_val, minlength=10)
    assert counts.tolist() == TRAIN_LABEL_COUNTS


def test_validation_split_follows_documented_permutation(mnist_train):
    _, (x_val, y_val) = carve_validation(mnist_train, 100, seed=3)
    perm = np.random.default_rng(3).permutation(60000)
    np.testing.assert_array_equal(y_val, mnist_train.y[np.sort(perm[:100])])
    np.testing.assert_array_equal(x_val, mnist_train.x[np.sort(perm[:100])])


def test_validation_split_is_deterministic_by_seed(mnist_train):
    (_, a_y), (a_x_val, _) = carve_validation(mnist_train, 1000, seed=7)
    (_, b_y), (b_x_val, _) = carve_validation(mnist_train, 1000, seed=7)
    _, (c_x_val, _) = carve_validation(mnist_train, 1000, seed=8)
    np.testing.assert_array_equal(a_x_val, b_x_val)
    np.testing.assert_array_equal(a_y, b_y)
    assert not np.array_equal(a_x_val, c_x_val)


def test_load_mnist_is_load_and_carve_validation(mnist_train, mnist_test):
    """The lessons' shorthand: both splits of ``load`` (flattened by default), the validation carved
    out of train; (N, 1, 28, 28) with ``flatten=False``."""
    data = load_mnist(validation_size=100, seed=3)
    (x, y), (x_val, y_val) = carve_validation(mnist_train, 100, seed=3)
    for got, expected in ((data.train, (x, y)), (data.validation, (x_val, y_val)), (data.test, mnist_test)):
        np.testing.assert_array_equal(got.x, expected[0])
        np.testing.assert_array_equal(got.y, expected[1])
    assert load_mnist().validation is None and load_mnist().train.x.shape == (60000, 784)
    assert load_mnist(flatten=False).test.x.shape == (10000, 1, 28, 28)


@pytest.mark.parametrize("size", [-1, 60000, 70000])
def test_bad_validation_size_is_a_value_error(size):
    with pytest.raises(ValueError, match="validation_size"):
        load_mnist(validation_size=size)


def test_non_integer_validation_size_is_a_type_error():
    with pytest.raises(TypeError):
        load_mnist(validation_size=0.5)


# ---------------------------------------------------------------------------------------------------
# Errors: each message names the file and the fault
# ---------------------------------------------------------------------------------------------------

def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def test_missing_file(mnist_dir):
    path = mnist_dir / f"{TEST_LABELS}.gz"
    path.unlink()
    assert_dataset_error(path, "missing file", f"looked for it in {mnist_dir}")


def test_missing_folder(tmp_path):
    path = tmp_path / "nowhere" / "mnist" / "train-images-idx3-ubyte.gz"
    assert_dataset_error(path, "missing file")


def test_folder_in_place_of_a_file(mnist_dir):
    path = mnist_dir / f"{TEST_LABELS}.gz"
    path.unlink()
    path.mkdir()
    assert_dataset_error(path, "cannot read the file")


def test_not_a_gzip_file(mnist_dir):
    path = replace(mnist_dir, TEST_LABELS, packaged_raw(TEST_LABELS))  # uncompressed IDX, no gzip
    assert_dataset_error(path, "not a gzip file")


def test_gzip_stream_cut_in_the_middle(mnist_dir):
    compressed = gz(packaged_raw(TEST_LABELS))
    path = replace(mnist_dir, TEST_LABELS, compressed[: len(compressed) // 2])
    assert_dataset_error(path, "corrupt gzip stream")


def test_gzip_stream_with_a_bad_crc(mnist_dir):
    compressed = bytearray(gz(packaged_raw(TEST_LABELS)))
    compressed[-8] ^= 0xFF  # the CRC-32 field of the gzip trailer
    path = replace(mnist_dir, TEST_LABELS, bytes(compressed))
    assert_dataset_error(path, "corrupt gzip stream")


def test_truncated_content(mnist_dir):
    raw = packaged_raw(TEST_IMAGES)
    path = replace(mnist_dir, TEST_IMAGES, gz(raw[: len(raw) - 1000]))  # a valid gzip of a short file
    assert_dataset_error(path, "truncated", "7840000 bytes", "found 7839000")


def test_truncated_header(mnist_dir):
    path = replace(mnist_dir, TEST_LABELS, gz(packaged_raw(TEST_LABELS)[:6]))
    assert_dataset_error(path, "truncated header")


def test_wrong_magic(mnist_dir):
    raw = packaged_raw(TEST_IMAGES)
    path = replace(mnist_dir, TEST_IMAGES, gz(struct.pack(">I", LABELS_MAGIC) + raw[4:]))
    assert_dataset_error(path, "wrong magic", "expected 2051", "found 2049")


def test_trailing_bytes(mnist_dir):
    path = replace(mnist_dir, TEST_LABELS, gz(packaged_raw(TEST_LABELS) + b"\x00" * 3))
    assert_dataset_error(path, "3 trailing bytes")


def test_one_changed_pixel_fails_the_checksum(mnist_dir):
    raw = bytearray(packaged_raw(TEST_IMAGES))
    raw[16 + 5 * 784 + 400] ^= 0x01  # one pixel of image 5; header and length stay valid
    path = replace(mnist_dir, TEST_IMAGES, gz(bytes(raw)))
    message = assert_dataset_error(path, "checksum mismatch")
    assert f"expected sha256 {MNIST_SHA256[TEST_IMAGES]}" in message
    assert f"actual sha256 {sha256_hex(bytes(raw))}" in message


def test_recompressed_copy_passes_the_checksum(mnist_dir):
    """The sums cover the uncompressed bytes, so a different gzip of the same data loads fine."""
    replace(mnist_dir, TEST_IMAGES, gz(packaged_raw(TEST_IMAGES)))
    assert load("mnist", "test", data_dir=mnist_dir.parent).x.shape == (10000, 1, 28, 28)


def test_label_count_mismatch(mnist_dir):
    """The test labels (N = 10,000) under the training labels' name, next to 60,000 training images.

    The file is a well-formed IDX, so the structural checks pass; the image/label pairing check runs
    before the checksums, so it is the count mismatch (not a checksum mismatch) that is reported.
    """
    labels_path = replace(mnist_dir, TRAIN_LABELS, gz(packaged_raw(TEST_LABELS)))
    message = assert_dataset_error(labels_path, "image/label count mismatch", "60000 images", "10000 labels")
    assert str(mnist_dir / "train-images-idx3-ubyte.gz") in message


def test_label_count_mismatch_lower_level(tmp_path):
    images, labels = np.zeros((3, 2, 2), np.uint8), np.zeros(4, np.uint8)
    with pytest.raises(DatasetError, match="3 images.*4 labels"):
        check_same_count(images, labels, tmp_path / "i.gz", tmp_path / "l.gz")


# ---------------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------------

def test_cache_returns_independent_arrays():
    first = [load("mnist", split) for split in ("train", "test")]
    expected_x, expected_y = first[0].x[0].copy(), first[0].y[0]
    for split in first:
        split.x[...] = 7.0
        split.y[...] = 99
    train, test = (load("mnist", split) for split in ("train", "test"))
    np.testing.assert_array_equal(train.x[0], expected_x)
    assert train.y[0] == expected_y
    assert test.y.max() <= 9 and test.x.max() == 1.0


def test_cache_notices_a_changed_file(mnist_dir):
    """The cache key holds mtime and size, so a file rewritten at the same path is read again."""
    replace(mnist_dir, TEST_LABELS, gz(packaged_raw(TEST_LABELS)))  # a real file, not a symlink
    load("mnist", "test", data_dir=mnist_dir.parent)  # caches it under its own path
    path = replace(mnist_dir, TEST_LABELS, gz(packaged_raw(TEST_LABELS) + b"\x00"))  # same path, new size
    assert_dataset_error(path, "1 trailing bytes")


def test_clear_cache_then_reload():
    datasets.clear_cache()
    assert np.bincount(load("mnist", "train").y).tolist() == TRAIN_LABEL_COUNTS


# ---------------------------------------------------------------------------------------------------
# Properties of the IDX parser on small synthetic files
# ---------------------------------------------------------------------------------------------------

small_images = st.tuples(st.integers(0, 5), st.integers(1, 4), st.integers(1, 4)).flatmap(
    lambda shape: st.binary(min_size=int(np.prod(shape)), max_size=int(np.prod(shape))).map(
        lambda data: np.frombuffer(data, np.uint8).reshape(shape)
    )
)


@given(small_images)
def test_parse_idx_round_trip(images):
    np.testing.assert_array_equal(parse_idx(encode_idx(images, IMAGES_MAGIC), IMAGES_MAGIC), images)


@settings(max_examples=50)
@given(small_images, st.data())
def test_every_strict_prefix_is_truncated(images, data):
    encoded = encode_idx(images, IMAGES_MAGIC)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(DatasetError, match="truncated"):
        parse_idx(encoded[:cut], IMAGES_MAGIC, "small.idx")


@settings(max_examples=50)
@given(small_images, st.binary(min_size=1, max_size=10))
def test_any_extra_bytes_are_trailing(images, extra):
    with pytest.raises(DatasetError, match=f"{len(extra)} trailing bytes"):
        parse_idx(encode_idx(images, IMAGES_MAGIC) + extra, IMAGES_MAGIC, "small.idx")
