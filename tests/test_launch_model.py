"""benchmarks/launch_model.py: the launch-and-FLOP model of a GPU step (counted launches from the strict
stand-in, FLOPs of the matrix products, stated H100 constants)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
launch_model = pytest.importorskip("launch_model")


def test_the_flops_of_an_mf_step_are_its_five_products_per_layer():
    """784-1000-1000, batch 256: per layer x W, a M^T, dG^T a, dG M, x^T dz, each 2 m k n: 1.86 GFLOP."""
    shapes = launch_model.products("mf", [784, 1000, 1000], 256)
    assert len(shapes) == 10
    flops = sum(2 * m * k * n for m, k, n in shapes)
    by_hand = 2 * 256 * (2 * 784 * 1000 + 2 * 1000 * 1000 + 3 * 1000 * 10 + 3 * 1000 * 10)
    assert flops == by_hand and round(flops / 1e9, 2) == 1.86


def test_bp_has_no_input_gradient_for_its_first_layer():
    shapes = launch_model.products("bp", [784, 1000, 1000], 256)
    assert (256, 1000, 784) not in shapes and (256, 10, 1000) in shapes and len(shapes) == 3 + 3 + 2


def test_the_bound_is_the_larger_time():
    fast_host = launch_model.predict("mf", [784, 1000, 1000], 256, launches=76, launch_us=0.01, tflops=67, tbps=3.35)
    slow_host = launch_model.predict("mf", [784, 1000, 1000], 256, launches=76, launch_us=5, tflops=67, tbps=3.35)
    assert fast_host["bound"] == "compute-bound" and slow_host["bound"] == "launch-bound"
    assert slow_host["host_ms"] == pytest.approx(76 * 5e-3) and slow_host["step_ms"] == slow_host["host_ms"]


def test_the_launches_are_counted_on_the_stand_in(monkeypatch):
    monkeypatch.setenv("MINIMF_STRICT_CUPY", "1")
    from minimf import MonoForwardNet
    assert sum(count for _, count in launch_model.launch_sequence(MonoForwardNet, [784, 64, 64], 256)) > 0


def test_the_script_prints_both_rules(capsys, monkeypatch):
    monkeypatch.setenv("MINIMF_STRICT_CUPY", "1")
    assert launch_model.main(["--hidden", "64", "x2"]) == 0
    out = capsys.readouterr().out
    assert "MF " in out and "BP " in out and "bound" in out


def test_graphs_between_products_count_each_stretch_once():
    sequence = [("matmul", 1), ("fuse: bias_relu", 1), ("matmul", 1), ("fuse: loss", 1), ("sum", 1),
                ("matmul", 1), ("matmul", 1), ("fuse: adam", 1)]
    assert launch_model.launches_with_graphs(sequence) == 4 + 3          # the 4 products, 3 stretches
    assert launch_model.launches_with_graphs([("matmul", 1)] * 3) == 3   # no stretch: nothing to save
    assert launch_model.launches_with_graphs([("sum", 1), ("sum", 1)]) == 1


def test_an_mf_step_saves_few_launches_with_graphs_between_its_products(monkeypatch):
    monkeypatch.setenv("MINIMF_STRICT_CUPY", "1")
    from minimf import MonoForwardNet
    sequence = launch_model.launch_sequence(MonoForwardNet, [784, 64, 64], 256)
    products = sum(count for operation, count in sequence if operation == "matmul")
    total = sum(count for _, count in sequence)
    assert products == 10 and total == 22
    assert launch_model.launches_with_graphs(sequence) == 18
