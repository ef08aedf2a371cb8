"""The CIFAR reader: Python 2 pickles in a tar.gz, read with an unpickler that runs no code.

Archives are generated in the real layout (fake_data.py writes pickles the way Python 2 did); each error
test breaks one thing and checks that the message names the archive, the member and the fault.
"""
import os
import pickle

import numpy as np
import pytest

from fake_data import cifar_archive, cifar_batch, py2_pickle, tar_gz
from minimf.datasets.cifar import RefusedPickle, parse_batch, read_cifar, restricted_loads
from minimf.datasets.common import DatasetError

TEST_BATCH = "cifar-10-batches-py/test_batch"


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_generated_archive_reads_back(tmp_path, rng, kind):
    data, expected = cifar_archive(kind, rng)
    path = tmp_path / "a.tar.gz"
    path.write_bytes(data)
    out = read_cifar(path, kind)
    for split in ("train", "test"):
        images, labels = out[split]
        np.testing.assert_array_equal(images, expected[split][0])
        assert images.dtype == np.uint8 and images.shape[1:] == (3, 32, 32)
        assert set(labels) == set(expected[split][1])
        for kind_of_label, values in labels.items():
            np.testing.assert_array_equal(values, expected[split][1][kind_of_label])
            assert values.dtype == np.int64
    assert len(out["train"][0]) == 40 and len(out["test"][0]) == 8


def test_rows_are_red_green_blue_planes(rng):
    """data[n] = 1024 red values, then green, then blue, each 32 x 32 row-major: (N, 3, 32, 32)."""
    row = np.concatenate([np.full(1024, 10), np.full(1024, 20), np.arange(1024) % 256]).astype(np.uint8)
    images, _ = parse_batch(py2_pickle({"data": row[None, :], "labels": [3]}), {"labels": 10})
    assert (images[0, 0] == 10).all() and (images[0, 1] == 20).all()
    assert images[0, 2, 0, :3].tolist() == [0, 1, 2] and images[0, 2, 1, 0] == 32   # row 1 starts at 32


def test_python2_pickle_matches_the_standard_unpickler(rng):
    batch = cifar_batch(rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), {"labels": [1, 2, 3, 4]})
    data = py2_pickle(batch)
    ours, standard = restricted_loads(data), pickle.loads(data, encoding="latin1")
    np.testing.assert_array_equal(ours["data"], standard["data"])
    assert ours["labels"] == standard["labels"] and ours["filenames"] == standard["filenames"]


# ---------------------------------------------------------------------------------------------------
# Pickles that would run code are refused
# ---------------------------------------------------------------------------------------------------

class RunsShellCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_pickle_calling_os_system_is_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"data": RunsShellCommand(f"touch {marker}"), "labels": []}, protocol=protocol)
    with pytest.raises(RefusedPickle, match=r"refused to load (posix|nt|os)\.system"):
        restricted_loads(evil)
    assert not marker.exists()                      # the command never ran
    pickle.loads(pickle.dumps(0))                   # (the standard unpickler is unaffected)


def test_malicious_member_in_an_archive_is_a_dataset_error(tmp_path, rng):
    marker = tmp_path / "pwned"
    members = _cifar10_members(rng)
    members[TEST_BATCH] = pickle.dumps(RunsShellCommand(f"touch {marker}"), protocol=2)
    path = _write(tmp_path, members)
    with pytest.raises(DatasetError, match=f"{TEST_BATCH}: refused to load"):
        read_cifar(path, "cifar10")
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [
    ("builtins", "eval"), ("builtins", "getattr"), ("numpy", "load"), ("numpy.core.multiarray", "scalar"),
    ("_codecs", "encode"), ("copyreg", "_reconstructor"), ("subprocess", "Popen"),
])
def test_only_the_three_numpy_names_are_allowed(module, name):
    data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."   # GLOBAL, EMPTY_TUPLE, REDUCE, STOP
    with pytest.raises(RefusedPickle, match=f"refused to load {module}.{name}"):
        restricted_loads(data)


def test_python3_numpy_pickles_are_refused_too(rng):
    """Python 3 writes bytes in protocol 2 as _codecs.encode calls; the CIFAR files never do."""
    with pytest.raises(RefusedPickle, match="_codecs.encode"):
        restricted_loads(pickle.dumps({"data": np.zeros((1, 3072), np.uint8)}, protocol=2))


# ---------------------------------------------------------------------------------------------------
# Truncated and malformed files
# ---------------------------------------------------------------------------------------------------

def _cifar10_members(rng, n=4):
    members = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        batch = cifar_batch(images, {"labels": rng.integers(0, 10, n)})
        members[f"cifar-10-batches-py/{name}"] = py2_pickle(batch)
    return members


def _write(tmp_path, members):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(tar_gz(members))
    return path


def assert_error(path, *phrases):
    with pytest.raises(DatasetError) as info:
        read_cifar(path, "cifar10")
    message = str(info.value)
    assert str(path) in message, message
    for phrase in phrases:
        assert phrase in message, message


def test_truncated_archive(tmp_path, rng):
    data = tar_gz(_cifar10_members(rng))
    path = tmp_path / "cut.tar.gz"
    path.write_bytes(data[: len(data) // 2])
    assert_error(path, "truncated or corrupt tar.gz archive")


def test_not_an_archive(tmp_path):
    path = tmp_path / "page.html"
    path.write_bytes(b"<html>Service unavailable</html>")  # what a captive portal might serve
    assert_error(path, "truncated or corrupt tar.gz archive")


def test_missing_member(tmp_path, rng):
    members = _cifar10_members(rng)
    del members[TEST_BATCH]
    assert_error(_write(tmp_path, members), f"the archive has no member {TEST_BATCH}")


def test_member_that_is_not_a_regular_file(tmp_path, rng):
    members = _cifar10_members(rng)
    del members[TEST_BATCH]
    path = tmp_path / "link.tar.gz"
    path.write_bytes(tar_gz(members, links={TEST_BATCH: "/etc/passwd"}))
    assert_error(path, f"member {TEST_BATCH} is not a regular file")


def _with_test_batch(tmp_path, rng, data):
    members = _cifar10_members(rng)
    members[TEST_BATCH] = data
    return _write(tmp_path, members)


def test_truncated_pickle(tmp_path, rng):
    good = _cifar10_members(rng)[TEST_BATCH]
    assert_error(_with_test_batch(tmp_path, rng, good[: len(good) // 2]), TEST_BATCH, "truncated pickle")


def test_garbage_instead_of_a_pickle(tmp_path, rng):
    assert_error(_with_test_batch(tmp_path, rng, b"\x80\x02\xff\xfe garbage"), TEST_BATCH, "malformed pickle")


@pytest.mark.parametrize("batch, phrase", [
    ([1, 2, 3], "expected a dict, the pickle holds a list"),
    ({"labels": [1]}, "no 'data' in the batch"),
    ({"data": np.zeros((2, 3072), np.uint8)}, "no 'labels' in the batch"),
    ({"data": np.zeros((2, 1024), np.uint8), "labels": [0, 0]}, "(N, 3072), found uint8 array of shape (2, 1024)"),
    ({"data": np.zeros((2, 3072), np.int32), "labels": [0, 0]}, "found int32 array"),
    ({"data": "pixels", "labels": [0, 0]}, "found str"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, "2 images but 1 'labels'"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, "label 10 is outside [0, 10)"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [0, "cat"]}, "'labels' must be a list of integers"),
])
def test_malformed_batch(tmp_path, rng, batch, phrase):
    assert_error(_with_test_batch(tmp_path, rng, py2_pickle(batch)), TEST_BATCH, phrase)
