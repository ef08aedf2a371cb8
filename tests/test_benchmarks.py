"""The benchmark scripts still run (tiny settings). They are measured by hand, never timed here:
these tests only guard against a script breaking when the library changes under it."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minimf import MonoForwardCNN, MonoForwardNet
from minimf.backend import gpu_available

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


def test_epoch_time_writes_json(tmp_path, capsys):
    """--json FILE: the seconds of every repeat and every ratio printed, written atomically."""
    path = tmp_path / "times.json"
    args = ["--hidden", "16", "--fraction", "0.005", "--repeats", "2", "--only", "mf", "bp", "--json", str(path)]
    assert load_script("epoch_time").main(args) == 0
    report = json.loads(path.read_text())
    assert report["arch"] == "mlp" and report["backend"] == "numpy" and report["timed_steps"] == 2
    assert set(report["seconds"]) == {"MF (minimf)", "BP (minimf)"}
    assert len(report["seconds"]["MF (minimf)"]["repeats"]) == 2
    mf_bp = report["ratios"]["MF/BP (minimf)"]
    assert mf_bp["median"] > 0 and mf_bp["target"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["times.json"]    # no temporary file left behind
    assert "MF/BP (minimf)" in capsys.readouterr().out


def test_epoch_time_runs_on_cupy(capsys):
    """--backend cupy (the strict stand-in without a GPU); the PyTorch GPU rows only where torch.cuda works."""
    args = ["--backend", "cupy", "--hidden", "16", "--fraction", "0.005", "--repeats", "1"]
    assert load_script("epoch_time").main(args) == 0
    out = capsys.readouterr().out
    assert "MF/BP (minimf)" in out and "MF pipelined" in out
    prediction = out[out.index("The launch model's step"):].splitlines()
    assert [line.split()[:3] for line in prediction[2:4]] == [["MF", "(minimf)", "11"], ["BP", "(minimf)", "16"]]  # one hidden layer
    if "torch" not in sys.modules or not sys.modules["torch"].cuda.is_available():
        assert "BP (PyTorch, CUDA)" not in out and "On the GPU, against PyTorch" not in out


def test_gpu_ratios_and_their_targets(capsys):
    """The GPU block's labels, the ratios of the medians and of the fastest repeats, and the targets."""
    epoch_time = load_script("epoch_time")
    seconds = {"MF (minimf)": [1.0, 3.0, 2.0], "BP (minimf)": [3.0], "BP (PyTorch, CUDA)": [4.0, 5.0],
               "MF (PyTorch, CUDA)": [2.0]}
    mlp = epoch_time.print_gpu_ratios(seconds, "mlp")
    assert mlp["MF (minimf, cupy) / BP (PyTorch, CUDA)"] == {"median": 2.0 / 4.5, "fastest": 1.0 / 4.0, "target": 0.65}
    assert mlp["BP (minimf, cupy) / BP (PyTorch, CUDA)"]["target"] == 1.0
    assert mlp["MF (minimf, cupy) / MF (PyTorch, CUDA)"] == {"median": 1.0, "fastest": 0.5, "target": None}
    assert "MF pipelined / BP (PyTorch, CUDA)" not in mlp              # not run: no line
    assert epoch_time.print_gpu_ratios(seconds, "cnn")["MF (minimf, cupy) / BP (PyTorch, CUDA)"]["target"] == 1.0
    out = capsys.readouterr().out
    assert "MF (minimf, cupy) / BP (PyTorch, CUDA)" in out and "(target 0.65 or below)" in out
    assert epoch_time.print_gpu_ratios({"MF (minimf)": [1.0]}, "mlp") == {}


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_pytorch_mf_is_minimf_mf(arch):
    """The benchmark's MF in PyTorch trains as minimf's MF does: from the same weights (float64),
    the same losses and parameters after three steps."""
    torch = pytest.importorskip("torch")
    epoch_time = load_script("epoch_time")
    rng = np.random.default_rng(0)
    if arch == "mlp":
        net, x = epoch_time.mlp_network([16, 12], 8), rng.standard_normal((8, 784))
        mf = MonoForwardNet(sizes=[784, 16, 12], num_classes=10, seed=0, dtype="float64")
    else:
        net, x = epoch_time.cnn_network([2, 3], 8), rng.standard_normal((8, 1, 28, 28))
        mf = MonoForwardCNN(input_shape=(1, 28, 28), channels=[2, 3], num_classes=10, seed=0, dtype="float64")
    layers = epoch_time.torch_mf_layers(torch, net, torch.device("cpu"))
    with torch.no_grad():
        for (body, M, _), layer in zip(layers, mf.layers):
            body.double()
            weight = layer.W.T if arch == "mlp" else layer.W          # Linear keeps W as (H, D)
            body[0].weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            body[0].bias.copy_(torch.from_numpy(layer.b))
            M.data = torch.from_numpy(layer.M.copy())
    for step in range(3):
        y = rng.integers(0, 10, 8)
        expected = [float(loss) for loss in mf.train_step(x, y)]
        got = epoch_time.torch_mf_step(torch, layers, torch.from_numpy(x), torch.from_numpy(y))
        np.testing.assert_allclose([float(loss) for loss in got], expected, rtol=1e-9, err_msg=f"step {step}")
    for (body, M, _), layer in zip(layers, mf.layers):
        np.testing.assert_allclose(M.detach().numpy(), layer.M, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(body[0].bias.detach().numpy(), layer.b, rtol=1e-7, atol=1e-10)


def test_epoch_time_pytorch_gpu_rows(monkeypatch, tmp_path, capsys):
    """The rows and ratios against PyTorch on the GPU, with PyTorch's "GPU" on the CPU here: the
    two PyTorch rows replace the CPU row, and --json has the GPU ratios."""
    torch = pytest.importorskip("torch")
    epoch_time = load_script("epoch_time")
    monkeypatch.setattr(epoch_time, "TORCH_GPU", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    path = tmp_path / "gpu.json"
    args = ["--backend", "cupy", "--hidden", "16", "--fraction", "0.005", "--repeats", "1", "--json", str(path)]
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32   # the script turns both off
    try:
        assert epoch_time.main(args) == 0
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    out = capsys.readouterr().out
    assert "BP (PyTorch, CUDA)" in out and "MF (PyTorch, CUDA)" in out and "BP (PyTorch, CPU)" not in out
    ratios = json.loads(path.read_text())["ratios"]
    assert ratios["MF (minimf, cupy) / BP (PyTorch, CUDA)"]["target"] == 0.65
    assert "BP (minimf, cupy) / BP (PyTorch, CUDA)" in ratios


def test_gpu_check_without_a_gpu(tmp_path):
    """benchmarks/gpu_check.sh where there is no GPU: it says so, runs the stand-in's tests, exits 0
    and writes summary.json saying that there was no GPU."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("needs bash")
    if gpu_available():
        pytest.skip("a GPU is present: the script would run its GPU checks")
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run([bash, str(BENCHMARKS / "gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["gpu"] is False and summary["passed"] is True and summary["benchmarks"] == {}
    assert [(s["name"], s["exit"]) for s in summary["steps"]] == [("stand-in-tests", 0)]
    assert "passed" in summary["steps"][0]["last_line"]
    assert "no GPU here" in (tmp_path / "gpu_check.log").read_text()


def test_side_by_side_runs(capsys):
    assert load_script("side_by_side").main(["--steps", "1", "--batch-size", "4", "--rounds", "1", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "one process" in out and "2 side by side" in out and "steps per second x" in out
