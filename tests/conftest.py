"""Shared test fixtures: the array backends and the ``gpu`` marker.

Tests that need CuPy and a CUDA device are marked ``gpu`` and skipped (never failed) where there
is none. The ``xp`` fixture runs a test on NumPy always and on CuPy where a GPU is present.
"""
import numpy as np
import pytest

from minimf.backend import gpu_available, get_backend

HAS_GPU = gpu_available()


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def backend(request):
    """The backend name: "numpy", and "cupy" where a GPU exists."""
    return request.param


@pytest.fixture
def xp(backend):
    """The array module of ``backend``."""
    return get_backend(backend)


@pytest.fixture
def rng():
    """A seeded host generator: test data are drawn on the host, then moved with xp.asarray."""
    return np.random.default_rng(1234)
