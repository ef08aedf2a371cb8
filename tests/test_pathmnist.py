"""PathMNIST (MedMNIST v2): the catalog entry, the ``.npz`` reader (minimf/datasets/medmnist.py) and
the rules for a file placed by hand, on small archives the tests make (the real one is 206 MB).

No SHA-256 of ``pathmnist.npz`` is published, so minimf never downloads it: a missing file is a clear
error saying where to get it and where to put it, made without a single network request; a present
file is checked against its size and the authors' MD5, and a wrong one is reported and left alone.
The archive is read with ``allow_pickle=False``: an object array in it is refused.
"""
import hashlib
import io
import pickle
import urllib.request

import numpy as np
import pytest

from minimf import MonoForwardMixer
from minimf.datasets import DATASETS, DatasetError, DownloadError, clear_cache, data_home, load, normalization
from minimf.datasets import __main__ as cli
from minimf.datasets import catalog
from minimf.datasets.download import check_file
from minimf.training.data import prepare_data

SIZES = {"train": 12, "val": 5, "test": 7}


def pathmnist_arrays(rng, sizes=SIZES, classes=9):
    """{member: array} as in pathmnist.npz: images uint8 (N, 28, 28, 3), labels uint8 (N, 1)."""
    arrays = {}
    for split, n in sizes.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, classes, (n, 1), dtype=np.uint8)
    return arrays


def npz_bytes(arrays):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("MINIMF_DATA", str(root))
    clear_cache()
    yield root
    clear_cache()


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a URL fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("minimf tried to download a file placed by hand")
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def place(monkeypatch, cache, data, md5_of=None):
    """Write ``data`` as <cache>/pathmnist/pathmnist.npz and point the catalog at the size and MD5 of
    ``md5_of`` (default: ``data`` itself), keeping the entry's other fields: no SHA-256, as the real one."""
    folder = cache / "pathmnist"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pathmnist.npz"
    path.write_bytes(data)
    info = DATASETS["pathmnist"]
    remote = info.files[0]._replace(size=len(md5_of or data), md5=hashlib.md5(md5_of or data).hexdigest())
    monkeypatch.setitem(catalog.DATASETS, "pathmnist", info._replace(files=(remote,)))
    return path


def test_the_catalog_entry():
    info = DATASETS["pathmnist"]
    assert info.kind == "image" and info.input_shape == (3, 28, 28) and info.num_classes == 9
    assert info.sizes == {"train": 89996, "val": 10004, "test": 7180}
    (remote,) = info.files
    assert remote.name == "pathmnist.npz" and remote.size == 205_615_438
    assert remote.md5 == "a8b06965200029087d5bd730944a56c1"
    assert remote.sha256 == "" and remote.by_hand and remote.urls == ()     # never downloaded
    assert remote.page.startswith("https://zenodo.org/records/10519652/")
    assert info.mean is None                       # computed from the training split


def test_every_split_loads_as_images(cache, monkeypatch, rng, no_network):
    arrays = pathmnist_arrays(rng)
    place(monkeypatch, cache, npz_bytes(arrays))
    for split in ("train", "val", "test"):
        data = load("pathmnist", split)
        assert data.x.shape == (SIZES[split], 3, 28, 28) and data.x.dtype == np.float32
        expected = arrays[f"{split}_images"].transpose(0, 3, 1, 2) / 255
        np.testing.assert_allclose(data.x, expected, rtol=1e-6)
        np.testing.assert_array_equal(data.y, arrays[f"{split}_labels"][:, 0])
        assert data.y.dtype == np.int64
    assert load("pathmnist", "test", flatten=True).x.shape == (7, 3 * 28 * 28)
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'val'"):
        load("mnist", "val")


def test_a_missing_file_says_where_to_get_it_and_downloads_nothing(cache, no_network):
    with pytest.raises(DownloadError) as info:
        load("pathmnist", "train")
    message = str(info.value)
    path = cache / "pathmnist" / "pathmnist.npz"
    for phrase in (f"{path}: missing file", "placed by hand", "does not download it",
                   "https://zenodo.org/records/10519652/files/pathmnist.npz", f"put it at\n  {path}",
                   "205,615,438 bytes", "md5 a8b06965200029087d5bd730944a56c1"):
        assert phrase in message, message
    assert isinstance(info.value, DatasetError)
    assert not (cache / "pathmnist").exists() or not any((cache / "pathmnist").iterdir())   # no .part, no lock


def test_a_wrong_file_is_reported_and_left_alone(cache, monkeypatch, rng, no_network):
    data = npz_bytes(pathmnist_arrays(rng))
    other = bytearray(data)
    other[-1] ^= 1                                  # the same size, another MD5
    path = place(monkeypatch, cache, data, md5_of=bytes(other))
    with pytest.raises(DownloadError, match=r"checksum mismatch: expected md5 .* \(as its authors publish") as info:
        load("pathmnist", "train")
    assert "left as it is" in str(info.value)
    assert path.read_bytes() == data                # the user's file is not deleted
    place(monkeypatch, cache, data + b"x", md5_of=data)
    with pytest.raises(DownloadError, match=f"size {len(data) + 1:,} bytes, expected {len(data):,}"):
        load("pathmnist", "train")


def test_the_md5_is_checked_only_where_no_sha256_is_known(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    remote = catalog.RemoteFile("f", 3, "", (), md5=hashlib.md5(b"abc").hexdigest())
    assert check_file(path, remote) is None
    assert "sha256" in check_file(path, remote._replace(sha256="0" * 64))      # a SHA-256, when known, rules
    assert "cannot be verified" in check_file(path, remote._replace(md5=""))


class Evil:
    def __reduce__(self):
        return (print, ("this ran while loading",))


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("val_labels"), "no array 'val_labels'"),
    (lambda a: a.update(train_images=a["train_images"][..., :1]), "expected uint8 images of shape (N, 28, 28, 3)"),
    (lambda a: a.update(test_images=a["test_images"].astype(np.float32)), "expected uint8 images"),
    (lambda a: a.update(train_labels=np.full((12, 1), 9, dtype=np.uint8)), "label 9 is outside [0, 9)"),
    (lambda a: a.update(val_labels=np.zeros((5, 14), dtype=np.uint8)), "multi-label"),
    (lambda a: a.update(test_labels=a["test_labels"][:3]), "image/label count mismatch"),
    (lambda a: a.update(train_labels=np.array([Evil()] * 12, dtype=object)), "refused"),
])
def test_damaged_archives_are_clear_errors(cache, monkeypatch, rng, capsys, change, message):
    arrays = pathmnist_arrays(rng)
    change(arrays)
    place(monkeypatch, cache, npz_bytes(arrays))
    with pytest.raises(DatasetError, match="pathmnist.npz") as info:
        load("pathmnist", "train")
    assert message in str(info.value), str(info.value)
    assert "this ran" not in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["broken zip", "npy", "pickle"])
def test_not_an_npz_archive(cache, monkeypatch, kind, capsys):
    if kind == "broken zip":
        data = b"PK\x03\x04 but not a zip archive at all"
    elif kind == "npy":
        buffer = io.BytesIO()
        np.save(buffer, np.zeros((2, 28, 28, 3), dtype=np.uint8))
        data = buffer.getvalue()
    else:
        data = pickle.dumps(Evil())
    place(monkeypatch, cache, data)
    with pytest.raises(DatasetError, match=r"pathmnist.npz: not an .npz \(zip\) archive"):
        load("pathmnist", "train")
    assert "this ran" not in capsys.readouterr().out


def test_channels_are_standardised_with_the_training_statistics(cache, monkeypatch, rng):
    arrays = pathmnist_arrays(rng)
    place(monkeypatch, cache, npz_bytes(arrays))
    train = load("pathmnist", "train")
    mean, std = normalization("pathmnist", x_train=train.x)
    assert mean.shape == (3, 1, 1) and mean.dtype == np.float32
    np.testing.assert_allclose(mean.ravel(), train.x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(std.ravel(), train.x.std(axis=(0, 2, 3)), rtol=1e-4)
    flat_mean, flat_std = normalization("pathmnist", x_train=train.x.reshape(12, -1), flatten=True)
    assert flat_mean.shape == (3 * 784,)
    np.testing.assert_allclose(flat_mean[::784], mean.ravel())
    with pytest.raises(ValueError, match="pass x_train"):
        normalization("pathmnist")


def test_prepared_for_a_mixer(cache, monkeypatch, rng):
    place(monkeypatch, cache, npz_bytes(pathmnist_arrays(rng)))
    data = prepare_data("pathmnist", np, flatten=False, validation=4, progress=False)
    x, y = data["train"]
    assert x.shape == (8, 3, 28, 28) and data["validation"][0].shape == (4, 3, 28, 28)
    np.testing.assert_allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    net = MonoForwardMixer(input_shape=(3, 28, 28), patch=4, width=8, token_hidden=4, channel_hidden=8, depth=2,
                           num_classes=9)
    losses = net.train_step(x, y)
    assert len(losses) == 2 and net.evaluate(*data["test"])["layers"]


def test_the_command_line(cache, monkeypatch, rng, capsys, no_network):
    assert cli.main(["download", "pathmnist"]) == 1
    err = capsys.readouterr().err
    assert "placed by hand" in err and "zenodo.org/records/10519652" in err
    assert cli.main(["list"]) == 0
    assert "placed by hand, from https://zenodo.org/records/10519652" in capsys.readouterr().out
    place(monkeypatch, cache, npz_bytes(pathmnist_arrays(rng)))
    assert cli.main(["download", "pathmnist"]) == 0
    assert f"pathmnist: 1 file(s) verified in {cache / 'pathmnist'}" in capsys.readouterr().out


def test_download_all_passes_over_a_missing_file_placed_by_hand(cache, monkeypatch, capsys):
    fetched = []
    monkeypatch.setattr(cli, "download", lambda name, root, progress=True: fetched.append(name) or True)
    assert cli.main(["download", "all"]) == 0
    assert "pathmnist" not in fetched and "cifar10" in fetched
    assert "pathmnist: placed by hand, not downloaded" in capsys.readouterr().out


@pytest.mark.slow
def test_the_real_file_where_it_is_placed():
    info = DATASETS["pathmnist"]
    path = data_home() / "pathmnist" / "pathmnist.npz"
    if not path.exists():
        pytest.skip(f"pathmnist.npz is not placed at {path}")
    for split, n in info.sizes.items():
        data = load("pathmnist", split, progress=False)
        assert data.x.shape == (n, 3, 28, 28) and set(np.unique(data.y)) == set(range(9))
