"""The benchmark scripts still run (tiny settings). They are measured by hand, never timed here:
these tests only guard against a script breaking when the library changes under it."""
import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # the scripts import their shared helper, as when run from there
    sys.path.insert(0, str(BENCHMARKS))


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("args", [
    ["--hidden", "16", "--fraction", "0.005", "--repeats", "1"],
    ["--arch", "cnn", "--channels", "2", "4", "--fraction", "0.005", "--repeats", "1"],
])
def test_epoch_time_runs(args, capsys):
    assert load_script("epoch_time").main(args) == 0
    out = capsys.readouterr().out
    assert "MF/BP (minimf)" in out and "FLOP" in out


@pytest.mark.parametrize("args", [["--depths", "1", "2", "--width", "16"], ["--arch", "cnn", "--channels", "2", "4"]])
def test_memory_runs(args, capsys):
    assert load_script("memory").main(args) == 0
    assert "MF peak MiB" in capsys.readouterr().out


def test_prediction_time_runs(capsys):
    args = ["--hidden", "16", "--batch", "50", "--single", "3", "--repeats", "1"]
    assert load_script("prediction_time").main(args) == 0
    assert "FF, all labels" in capsys.readouterr().out


def test_profile_step_runs(capsys):
    pytest.importorskip("threadpoolctl", reason="profile_step.py sets its BLAS threads (default 1) through threadpoolctl")
    assert load_script("profile_step").main(["--hidden", "16", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "by kind:" in out and "BLAS:" in out


def test_forced_openblas_kernel_is_reported(monkeypatch, capsys):
    """OPENBLAS_CORETYPE (set on some machines) can halve the speed of every product: the header
    says which kernel ran and warns when the variable forced it."""
    blas = load_script("blas_threads")
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    assert "OPENBLAS_CORETYPE=Haswell" in blas.blas_kernel()
    assert "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE" in blas.kernel_warning()
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    monkeypatch.delenv("OPENBLAS_L2_SIZE", raising=False)
    assert blas.kernel_warning() == "" and "OPENBLAS_CORETYPE" not in blas.blas_kernel()
    assert load_script("epoch_time").main(["--hidden", "16", "--fraction", "0.005", "--repeats", "1"]) == 0
    assert "  BLAS      " in capsys.readouterr().out


def test_epoch_time_only_some_configurations(capsys):
    """--only times the named rows alone; the ratios that need another row are left out."""
    args = ["--hidden", "16", "--fraction", "0.005", "--repeats", "1", "--only", "mf", "mf-products"]
    assert load_script("epoch_time").main(args) == 0
    out = capsys.readouterr().out
    assert "MF/MF-products" in out and "BP (minimf)" not in out and "MF/BP (minimf)" not in out


def test_epoch_time_only_refuses_what_cannot_run_here():
    with pytest.raises(SystemExit, match="MF unit-split cannot run"):
        load_script("epoch_time").main(["--arch", "cnn", "--channels", "2", "--fraction", "0.005",
                                        "--repeats", "1", "--only", "mf-unit-split"])
