"""Shared test fixtures: the array backends and the ``gpu`` marker.

Tests that truly need CuPy and a CUDA device (timings, cuBLAS, memory pools, several GPUs) are
marked ``gpu`` and skipped (never failed) where there is none. The ``backend``/``xp`` fixtures run a
test on NumPy and on "cupy": real CuPy where a GPU is present, and elsewhere minimf's strict CuPy
stand-in (minimf/testing/strict_cupy.py), switched on here with ``MINIMF_STRICT_CUPY=1`` for this
process and the commands it starts, so that every CuPy path runs in CI.
"""
import os

import numpy as np
import pytest

from minimf.backend import STRICT_CUPY_VAR, gpu_available, get_backend

HAS_GPU = gpu_available()
if not HAS_GPU:
    os.environ[STRICT_CUPY_VAR] = "1"


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["numpy", "cupy"])
def backend(request):
    """The backend name: "numpy", and "cupy" (a GPU where one exists, else the strict stand-in)."""
    return request.param


@pytest.fixture
def xp(backend):
    """The array module of ``backend``."""
    return get_backend(backend)


@pytest.fixture
def rng():
    """A seeded host generator: test data are drawn on the host, then moved with xp.asarray."""
    return np.random.default_rng(1234)


@pytest.fixture
def real_cupy_only(monkeypatch):
    """get_backend("cupy") looks for real CuPy in this test: the stand-in switch above is off."""
    monkeypatch.delenv(STRICT_CUPY_VAR, raising=False)


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray instance shared by a test module (starting one takes several seconds here;
    it is stopped after the module, since its background processes keep a core busy): the Ray
    trainer finds it running and uses it. Skipped where Ray is not installed."""
    ray = pytest.importorskip("ray")
    for name, value in (("RAY_USAGE_STATS_ENABLED", "0"), ("RAY_DEDUP_LOGS", "0")):
        os.environ.setdefault(name, value)
    for attempt in (1, 2):     # on a loaded machine a local instance's start can time out: try once more
        try:
            ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, log_to_driver=False, configure_logging=False)
            break
        except Exception:  # noqa: BLE001 -- Ray raises a plain Exception when its node times out
            ray.shutdown()
            if attempt == 2:
                raise
    yield ray
    ray.shutdown()


@pytest.fixture
def tiny_cifar10(tmp_path, monkeypatch):
    """CIFAR-10 of 100 training and 20 test images (random pixels and labels) in a temporary
    $MINIMF_DATA, for runs with --augment (tests/fake_data.py; no network)."""
    from fake_data import cifar_archive, install
    from minimf.datasets import DATASETS, clear_cache
    root = tmp_path / "data"
    monkeypatch.setenv("MINIMF_DATA", str(root))
    clear_cache()
    data, _ = cifar_archive("cifar10", np.random.default_rng(0), n_per_batch=20)
    install(monkeypatch, root, "cifar10", {DATASETS["cifar10"].files[0].name: data}, {"train": 100, "test": 20})
    yield
    clear_cache()


@pytest.fixture
def signal_after(monkeypatch):
    """``signal_after(k, signum=SIGINT)``: a real signal to this process when the k-th batch of a run
    is handed out (the progress bar of minimf/training/loop.py is where a batch is handed out, for
    every trainer). Ctrl-C is SIGINT; a cluster scheduler sends SIGTERM."""
    import signal

    import minimf.training.loop as loop_module
    real_progress_bar = loop_module.progress_bar
    armed = {"left": None, "signum": signal.SIGINT}

    def counting_bar(**options):              # the loop's bar, whose update also counts the batches
        bar = real_progress_bar(**options)
        real_update = bar.update

        def update(n=1):
            real_update(n)
            if armed["left"] is not None:
                armed["left"] -= n
                if armed["left"] == 0:
                    signal.raise_signal(armed["signum"])
        bar.update = update
        return bar

    monkeypatch.setattr(loop_module, "progress_bar", counting_bar)

    def arm(k, signum=signal.SIGINT):
        armed.update(left=k, signum=signum)
    return arm
