"""``minimf.datasets.load`` and friends on small generated data sets in a temporary ``$MINIMF_DATA``.

``fake_data.install`` writes files in the real formats into the cache and points the catalog at their
checksums, so the whole path runs: checksum, parser, shapes, labels. The real data sets are checked
only where they are already cached (``-m slow``), so no test needs a network.
"""
import sys

import numpy as np
import pytest

from fake_data import cifar_archive, fashion_files, install
from local_server import LocalServer
from minimf.backend import to_numpy
from minimf.datasets import (
    DATASETS,
    MNIST_MEAN,
    MNIST_STD,
    PACKAGED_MNIST_DIR,
    DatasetError,
    DownloadError,
    clear_cache,
    data_home,
    load,
    normalization,
    num_classes,
)
from minimf.datasets import __main__ as cli
from minimf.datasets import download
from minimf.datasets.augment import augment_batch, random_crop, random_flip
from minimf.datasets.download import check_file
from minimf.datasets.mnist import mnist_pairs, read_mnist_pair
from minimf.datasets.tabular import split_indices


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty ``$MINIMF_DATA``; parsed files are forgotten afterwards."""
    root = tmp_path / "cache"
    monkeypatch.setenv("MINIMF_DATA", str(root))
    yield root
    clear_cache()


@pytest.fixture
def fashion(cache, monkeypatch, rng):
    files, arrays = fashion_files(rng)
    install(monkeypatch, cache, "fashion-mnist", files, {"train": 60, "test": 20})
    return arrays


@pytest.fixture(params=["cifar10", "cifar100"])
def cifar(request, cache, monkeypatch, rng):
    name = request.param
    data, expected = cifar_archive(name, rng)
    install(monkeypatch, cache, name, {DATASETS[name].files[0].name: data}, {"train": 40, "test": 8})
    return name, expected


# ---------------------------------------------------------------------------------------------------
# Shapes, values, labels
# ---------------------------------------------------------------------------------------------------

def test_fashion_mnist_images_keep_their_shape(fashion):
    for split in ("train", "test"):
        data = load("fashion-mnist", split)
        images, labels = fashion[split]
        assert data.x.shape == (len(images), 1, 28, 28) and data.x.dtype == np.float32
        np.testing.assert_array_equal(data.x[:, 0], images / np.float32(255))
        np.testing.assert_array_equal(data.y, labels) and data.y.dtype == np.int64
    flat = load("fashion-mnist", "train", flatten=True)
    assert flat.x.shape == (60, 784)
    np.testing.assert_array_equal(flat.x, load("fashion-mnist", "train").x.reshape(60, 784))


def test_cifar_images_are_n_c_h_w(cifar):
    name, expected = cifar
    for split in ("train", "test"):
        data = load(name, split)
        images, labels = expected[split]
        assert data.x.shape == (len(images), 3, 32, 32) and data.x.dtype == np.float32
        np.testing.assert_array_equal(data.x, images / np.float32(255))
        np.testing.assert_array_equal(data.y, labels["fine"])
    assert load(name, "test", flatten=True).x.shape == (8, 3072)


def test_cifar100_coarse_labels(cache, monkeypatch, rng):
    data, expected = cifar_archive("cifar100", rng)
    install(monkeypatch, cache, "cifar100", {"cifar-100-python.tar.gz": data}, {"train": 40, "test": 8})
    np.testing.assert_array_equal(load("cifar100", "train", labels="coarse").y, expected["train"][1]["coarse"])
    assert num_classes("cifar100") == 100 and num_classes("cifar100", "coarse") == 20


def test_mnist_through_load_is_the_packaged_copy():
    data = load("mnist", "test")
    assert data.x.shape == (10000, 1, 28, 28)
    images, labels = read_mnist_pair(*mnist_pairs(PACKAGED_MNIST_DIR)["test"])
    np.testing.assert_array_equal(data.x[:, 0], images / np.float32(255))
    np.testing.assert_array_equal(data.y, labels)


def test_mnist_from_a_data_dir(tmp_path):
    """With an explicit data_dir, MNIST is read from <data_dir>/mnist (the four standard .gz files)."""
    with pytest.raises(DatasetError, match="missing file"):
        load("mnist", "test", data_dir=tmp_path)
    (tmp_path / "mnist").mkdir()
    for src in PACKAGED_MNIST_DIR.glob("*.gz"):
        (tmp_path / "mnist" / src.name).symlink_to(src)
    assert load("mnist", "test", data_dir=tmp_path).x.shape == (10000, 1, 28, 28)


def test_every_call_returns_new_arrays(fashion):
    first = load("fashion-mnist", "test")
    first.x[...] = 7
    first.y[...] = 99
    second = load("fashion-mnist", "test")
    assert second.x.max() <= 1 and second.y.max() < 10


@pytest.mark.parametrize("call, message", [
    (lambda: load("imagenet"), "unknown data set 'imagenet': choose one of mnist, fashion-mnist"),
    (lambda: load("mnist", "validation"), "split must be 'train' or 'test'"),
    (lambda: load("cifar10", labels="coarse"), "cifar10 has no coarse labels"),
    (lambda: load("cifar100", labels="superclass"), "labels must be 'fine' or 'coarse'"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------------
# Verification and downloads through load()
# ---------------------------------------------------------------------------------------------------

def test_damaged_cached_file_is_deleted_before_use(fashion, cache, capsys):
    path = cache / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(DownloadError, match="missing file"):
        load("fashion-mnist", "test", download=False)
    assert "checksum mismatch" in capsys.readouterr().err and not path.exists()


def test_cifar10_downloaded_from_a_local_server_into_an_empty_cache(cache, monkeypatch, rng):
    data, expected = cifar_archive("cifar10", rng)
    server = LocalServer()
    try:
        url = server.serve("kriz/cifar-10-python.tar.gz", data)
        install(monkeypatch, cache / "unused", "cifar10", {"cifar-10-python.tar.gz": data},
                {"train": 40, "test": 8}, urls={"cifar-10-python.tar.gz": [url]})
        train = load("cifar10", "train", progress=False)
    finally:
        server.close()
    np.testing.assert_array_equal(train.y, expected["train"][1]["fine"])
    assert (cache / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == data


def test_missing_file_without_download_names_file_place_and_checksum(cache):
    remote = DATASETS["cifar10"].files[0]
    with pytest.raises(DownloadError) as info:
        load("cifar10", download=False)
    message = str(info.value)
    assert str(cache / "cifar10" / "cifar-10-python.tar.gz") in message
    assert remote.sha256 in message and "170,498,071 bytes" in message and remote.urls[0] in message


def test_data_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MINIMF_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_home() == tmp_path / "xdg" / "minimf"
    monkeypatch.setenv("MINIMF_DATA", str(tmp_path / "mine"))
    assert data_home() == tmp_path / "mine"
    assert data_home(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("MINIMF_DATA")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_home() == tmp_path / "home" / ".cache" / "minimf"


# ---------------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------------

def test_image_normalization_constants_broadcast_per_channel():
    mean, std = normalization("cifar10")
    assert mean.shape == (3, 1, 1) and mean.dtype == np.float32
    np.testing.assert_allclose(mean.ravel(), DATASETS["cifar10"].mean)
    flat_mean, flat_std = normalization("cifar10", flatten=True)
    assert flat_mean.shape == (3072,)
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(((x - mean) / std).reshape(2, -1), (x.reshape(2, -1) - flat_mean) / flat_std,
                               rtol=1e-6)
    assert normalization("mnist")[0].item() == np.float32(MNIST_MEAN)
    assert normalization("mnist")[1].item() == np.float32(MNIST_STD)


def test_tabular_normalization_uses_training_statistics():
    x_train = np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)
    mean, std = normalization("breast-cancer", x_train=x_train)
    np.testing.assert_allclose(mean, [2.0, 5.0])
    np.testing.assert_allclose(std, [1.0, 1.0])  # the constant feature gets std 1, not 0
    with pytest.raises(ValueError, match="pass x_train"):
        normalization("digits")


# ---------------------------------------------------------------------------------------------------
# Tabular data (scikit-learn)
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, n, d, classes", [("breast-cancer", 569, 30, 2), ("digits", 1797, 64, 10)])
def test_tabular_split(name, n, d, classes):
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    train, test = load(name, "train"), load(name, "test")
    assert train.x.shape == (n - n // 5, d) and test.x.shape == (n // 5, d)
    assert train.x.dtype == np.float32 and train.y.dtype == np.int64
    assert set(np.unique(train.y)) == set(np.unique(test.y)) == set(range(classes))
    bunch = getattr(sklearn_datasets, {"breast-cancer": "load_breast_cancer", "digits": "load_digits"}[name])()
    test_idx, train_idx = split_indices(n)
    assert len(np.intersect1d(test_idx, train_idx)) == 0 and len(test_idx) + len(train_idx) == n
    np.testing.assert_array_equal(test.x, bunch.data[test_idx].astype(np.float32))
    np.testing.assert_array_equal(train.y, bunch.target[train_idx])
    assert DATASETS[name].sizes == {"train": n - n // 5, "test": n // 5}


def test_tabular_without_scikit_learn_says_how_to_install_it(monkeypatch):
    clear_cache()
    monkeypatch.setitem(sys.modules, "sklearn", None)  # "import sklearn" now fails
    with pytest.raises(DatasetError, match=r'pip install "minimf\[tabular\]"'):
        load("breast-cancer")


# ---------------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------------

def naive_crop_flip(x, pad, rng):
    """The same draws as augment_batch, one image at a time."""
    N, C, H, W = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dy, dx = rng.integers(0, 2 * pad + 1, size=N), rng.integers(0, 2 * pad + 1, size=N)
    out = np.stack([padded[n, :, dy[n]:dy[n] + H, dx[n]:dx[n] + W] for n in range(N)])
    flip = rng.random(N) < 0.5
    return np.stack([out[n, :, :, ::-1] if flip[n] else out[n] for n in range(N)])


def test_augmentation_matches_a_loop_over_images(xp):
    x = np.random.default_rng(1).random((6, 3, 8, 8)).astype(np.float32)
    expected = naive_crop_flip(x, 4, np.random.default_rng(5))
    out = augment_batch(xp.asarray(x), (3, 8, 8), np.random.default_rng(5), pad=4)
    assert type(out) is type(xp.asarray(x)) and out.shape == x.shape
    np.testing.assert_array_equal(to_numpy(out), expected)
    flat = augment_batch(xp.asarray(x.reshape(6, -1)), (3, 8, 8), np.random.default_rng(5), pad=4)
    assert flat.shape == (6, 192)


def test_crop_without_padding_is_the_identity_and_flips_mirror(rng):
    x = rng.random((5, 2, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(random_crop(x, 0, rng), x)
    flipped = random_flip(x, np.random.default_rng(3))
    mirrored = np.random.default_rng(3).random(5) < 0.5
    for n in range(5):
        np.testing.assert_array_equal(flipped[n], x[n, :, :, ::-1] if mirrored[n] else x[n])
    shifted = random_crop(x, 2, rng)  # every output pixel is an input pixel or padding
    assert np.isin(shifted, np.append(x.ravel(), 0)).all()


# ---------------------------------------------------------------------------------------------------
# python -m minimf.datasets
# ---------------------------------------------------------------------------------------------------

def test_list_shows_verified_damaged_partial_and_missing(fashion, cache, capsys):
    (cache / "fashion-mnist" / "train-labels-idx1-ubyte.gz").write_bytes(b"not the file")
    (cache / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    (cache / "fashion-mnist" / "t10k-images-idx3-ubyte.gz.part").write_bytes(b"x" * 2000)
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert f"cache: {cache}" in out
    assert any("train-images-idx3-ubyte.gz" in line and "verified" in line and "NOT" not in line for line in lines)
    assert any("train-labels-idx1-ubyte.gz" in line and "NOT verified: size 12 bytes" in line for line in lines)
    assert any("t10k-images-idx3-ubyte.gz" in line and "2.0 kB of" in line and ".part" in line for line in lines)
    assert "cifar-10-python.tar.gz" in out and "missing (170.5 MB to download)" in out
    assert "mnist          packaged with minimf: 4 files, verified" in out


def test_download_command_fetches_and_verifies(cache, monkeypatch, rng, capsys):
    monkeypatch.setattr(download, "RETRY_WAIT", 0.0)
    data, _ = cifar_archive("cifar10", rng)
    server = LocalServer()
    try:
        url = server.serve("cifar-10-python.tar.gz", data)
        install(monkeypatch, cache / "unused", "cifar10", {"cifar-10-python.tar.gz": data},
                {"train": 40, "test": 8}, urls={"cifar-10-python.tar.gz": [url]})
        assert cli.main(["download", "cifar10", "mnist", "--no-progress"]) == 0
    finally:
        server.close()
    out = capsys.readouterr().out
    assert f"cifar10: 1 file(s) verified in {cache / 'cifar10'}" in out and "mnist: packaged" in out
    assert check_file(cache / "cifar10" / "cifar-10-python.tar.gz", DATASETS["cifar10"].files[0]) is None


def test_download_command_offline_reports_each_file_and_fails(cache, monkeypatch, capsys):
    from test_downloads import closed_port_url
    url = closed_port_url()
    info = DATASETS["fashion-mnist"]
    offline = tuple(f._replace(urls=(url.replace("archive.tar.gz", f.name),)) for f in info.files)
    monkeypatch.setitem(DATASETS, "fashion-mnist", info._replace(files=offline))
    assert cli.main(["download", "fashion-mnist", "--no-progress"]) == 1
    err = capsys.readouterr().err
    for f in info.files:
        assert f"could not download {f.name}" in err and f.sha256 in err
    assert "not downloaded: fashion-mnist" in err


def test_download_command_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit):
        cli.main(["download", "imagenet"])
    assert "invalid choice" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# The real files, where they are cached (skipped otherwise)
# ---------------------------------------------------------------------------------------------------

def real_files_or_skip(name):
    info = DATASETS[name]
    folder = data_home() / name
    if not all((folder / f.name).exists() and check_file(folder / f.name, f) is None for f in info.files):
        pytest.skip(f"{name} is not downloaded (python -m minimf.datasets download {name})")
    return info


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "cifar100"])
def test_real_data_sizes_and_normalization_constants(name):
    info = real_files_or_skip(name)
    train, test = load(name, "train", progress=False), load(name, "test", progress=False)
    assert len(train.y) == info.sizes["train"] and len(test.y) == info.sizes["test"]
    assert train.x.shape[1:] == info.input_shape
    assert np.bincount(train.y).tolist() == [info.sizes["train"] // info.num_classes] * info.num_classes
    channels = [train.x[:, c].astype(np.float64) for c in range(train.x.shape[1])]  # (~400 MB each)
    mean, std = np.array([c.mean() for c in channels]), np.array([c.std() for c in channels])
    print(f"{name}: mean {np.round(mean, 4)}, std {np.round(std, 4)}")
    np.testing.assert_allclose(mean, info.mean, atol=2e-4)
    np.testing.assert_allclose(std, info.std, atol=2e-4)
