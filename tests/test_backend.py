"""Backend selection: NumPy always; CuPy only where installed and a device exists; clear errors."""
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import minimf
from minimf.backend import STRICT_CUPY_VAR, BackendError, get_array_module, get_backend, to_numpy


def test_numpy_backend():
    assert get_backend("numpy") is np
    assert get_array_module(np.zeros(2)) is np
    x = np.arange(3)
    assert to_numpy(x) is x


def test_unknown_backend_names_the_choices():
    with pytest.raises(BackendError, match="unknown backend 'jax'.*numpy, cupy"):
        get_backend("jax")


def test_missing_cupy_says_how_to_install(monkeypatch, real_cupy_only):
    monkeypatch.setitem(sys.modules, "cupy", None)       # makes `import cupy` raise ImportError
    with pytest.raises(BackendError, match=re.escape('pip install "minimf[cuda12]"')):
        get_backend("cupy")


def fake_cupy(device_count):
    def count():
        if isinstance(device_count, Exception):
            raise device_count
        return device_count
    runtime = types.SimpleNamespace(getDeviceCount=count)
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime),
                                 get_array_module=lambda *a: np)


def test_cupy_without_a_device(monkeypatch, real_cupy_only):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(0))
    with pytest.raises(BackendError, match="no CUDA device"):
        get_backend("cupy")


def test_cupy_with_a_broken_driver(monkeypatch, real_cupy_only):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(RuntimeError("cudaErrorInsufficientDriver")))
    with pytest.raises(BackendError, match="cannot reach a CUDA device.*InsufficientDriver"):
        get_backend("cupy")


def test_a_cupy_that_fails_to_import_is_a_backend_error(monkeypatch, real_cupy_only):
    """A broken install (CUDA libraries missing) can fail in other ways than ImportError."""
    class Broken:
        def find_spec(self, name, path=None, target=None):
            if name == "cupy":
                raise OSError("libcudart.so.12: cannot open shared object file")
            return None
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(BackendError, match="cannot be imported .*OSError: libcudart"):
        get_backend("cupy")


def test_only_the_backend_module_imports_cupy():
    """The house rule behind backend-agnostic code: every other module gets xp from backend."""
    package = Path(minimf.__file__).parent
    offenders = [p.name for p in package.rglob("*.py")
                 if p.name != "backend.py" and re.search(r"^\s*(import cupy|from cupy)", p.read_text(), re.M)]
    assert offenders == []


def test_strict_cupy_switch_gives_the_stand_in(monkeypatch, capsys):
    """MINIMF_STRICT_CUPY=1: get_backend("cupy") is the CPU stand-in, even where CuPy is missing."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setenv(STRICT_CUPY_VAR, "1")
    xp = get_backend("cupy")
    assert xp.__name__ == "minimf.testing.strict_cupy"
    x = xp.asarray(np.arange(3.0))
    assert get_array_module(x) is xp and get_array_module(np.zeros(1)) is np
    np.testing.assert_array_equal(to_numpy(x), [0.0, 1.0, 2.0])


def test_only_the_backend_imports_the_stand_in():
    """No training code imports minimf.testing: the stand-in comes only through get_backend."""
    package = Path(minimf.__file__).parent
    offenders = [p.name for p in package.rglob("*.py") if "testing" not in p.parts and p.name != "backend.py"
                 and re.search(r"^\s*(import|from) minimf\.testing", p.read_text(), re.M)]
    assert offenders == []
