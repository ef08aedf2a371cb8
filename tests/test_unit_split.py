"""Unit-split Mono-Forward training (minimf/parallel/unit_split.py) against the sequential ``train_step``.

One thread: the same operations on the same numbers, so the same parameters bit for bit. Two or
more threads: G is summed part by part, so the results agree to float rounding (checked in
float64, where rounding is ~1e-16). The comparison is shown to catch a wrong split; the threads
really run at the same time; bad settings and errors in a part are clear errors.
"""
import json
import threading

import numpy as np
import pytest
import training_helpers
from training_helpers import parameter_pairs, sequential_run, use_rates

from minimf import MonoForwardCNN, MonoForwardNet
from minimf.parallel import unit_split
from minimf.backend import BLAS_THREAD_VARS
from minimf.nn.optim import Adam
from minimf.train import main
from minimf.parallel.unit_split import train_unit_split

STEPS = 4


def mlp(dtype="float32", bias=True, optimizer="adam", sizes=(20, 16, 7)):
    return MonoForwardNet(sizes=list(sizes), num_classes=5, seed=3, dtype=dtype, bias=bias, optimizer=optimizer,
                          lr=1e-3 if optimizer == "adam" else 0.1)


def make_batches(n=STEPS, size=6, features=20, seed=0):
    return training_helpers.make_batches((features,), n, size, seed)


@pytest.mark.parametrize("bias", [True, False])
def test_one_thread_equals_train_step_bit_for_bit(bias):
    batches = make_batches()
    sequential, split_net = mlp(bias=bias), mlp(bias=bias)
    expected = sequential_run(sequential, batches)
    assert train_unit_split(split_net, batches, threads=1) == expected       # floats compared exactly
    for label, a, b in parameter_pairs(sequential, split_net):
        np.testing.assert_array_equal(b, a, err_msg=label)


@pytest.mark.parametrize("threads", [2, 3, 7])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_threads_equal_train_step_up_to_rounding(threads, optimizer):
    """float64, widths 16 and 7 (7 units in 3 parts: 2, 2, 3; in 7 parts: one unit each)."""
    batches = make_batches()
    rates = [1e-3 * (1 + k) for k in range(STEPS)] if optimizer == "adam" else None
    sequential, split_net = mlp("float64", optimizer=optimizer), mlp("float64", optimizer=optimizer)
    expected = sequential_run(sequential, batches, rates)
    np.testing.assert_allclose(train_unit_split(use_rates(split_net, rates), batches, threads=threads), expected, rtol=1e-12)
    for label, a, b in parameter_pairs(sequential, split_net):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, err_msg=label)
    assert all(opt.t == STEPS for opt in split_net.optimizers if isinstance(opt, Adam))


def test_a_wrong_split_is_caught(monkeypatch):
    """The comparison above is not vacuous: leaving the last part's share out of G (as a split
    that forgot to add it) changes the parameters far beyond rounding."""
    batches = make_batches()
    sequential, split_net = mlp("float64"), mlp("float64")
    sequential_run(sequential, batches)
    forward_part = unit_split.forward_part

    def forgetful(layer, x, a, u):
        share = forward_part(layer, x, a, u)
        return share * 0 if u.stop == layer.W.shape[1] else share

    monkeypatch.setattr(unit_split, "forward_part", forgetful)
    train_unit_split(split_net, batches, threads=2)
    with pytest.raises(AssertionError):
        for label, a, b in parameter_pairs(sequential, split_net):
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, err_msg=label)


def test_float32_threads_stay_close_to_train_step():
    """The training setting: float32, two threads, the layers of the paper's shape scaled down."""
    batches = make_batches(size=32)
    sequential, split_net = mlp(sizes=(20, 64, 64)), mlp(sizes=(20, 64, 64))
    expected = sequential_run(sequential, batches)
    np.testing.assert_allclose(train_unit_split(split_net, batches, threads=2), expected, rtol=1e-5)
    for label, a, b in parameter_pairs(sequential, split_net):
        np.testing.assert_allclose(b, a, atol=1e-4, err_msg=label)   # Adam's steps are ~1e-3


def test_parts_run_at_the_same_time(monkeypatch):
    """Part 0 of the first forward waits until part 1 has started: if the parts took turns
    (part 1 only after part 0), the wait would time out."""
    part1_started = threading.Event()
    forward_part = unit_split.forward_part

    def watched(layer, x, a, u):
        if u.start == 0:
            assert part1_started.wait(timeout=10), "part 1 never started while part 0 ran"
        else:
            part1_started.set()
        return forward_part(layer, x, a, u)

    monkeypatch.setattr(unit_split, "forward_part", watched)
    train_unit_split(mlp(), make_batches(n=1), threads=2)


def test_an_error_in_a_part_is_raised_and_every_thread_ends(monkeypatch):
    """Part 1 of 3 fails on a pool thread; parts 0 and 2 finish; the error reaches the caller."""
    gradient_part = unit_split.gradient_part

    def broken(layer, x, a, dG, grads, u):
        if u.start > 0 and u.stop < layer.W.shape[1]:
            raise RuntimeError("a part broke")
        gradient_part(layer, x, a, dG, grads, u)

    monkeypatch.setattr(unit_split, "gradient_part", broken)
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="a part broke"):
        train_unit_split(mlp(), make_batches(), threads=3)
    assert threading.active_count() == before


def test_a_bad_batch_is_a_clear_error():
    batches = make_batches(n=3)
    batches[1] = (batches[1][0], np.full(6, 9))          # label 9 of 5 classes
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        train_unit_split(mlp(), batches, threads=2)


@pytest.mark.parametrize("threads, message", [(0, "positive integer"), (True, "positive integer"),
                                              ("2", "positive integer"), (8, "layer 2 has 7 units")])
def test_bad_thread_counts_are_clear_errors(threads, message):
    with pytest.raises(ValueError, match=message):
        train_unit_split(mlp(), make_batches(), threads=threads)


def test_conv_blocks_are_refused():
    net = MonoForwardCNN(input_shape=(1, 8, 8), channels=(3, 4), num_classes=5, seed=0)
    with pytest.raises(ValueError, match="needs dense layers"):
        train_unit_split(net, [], threads=2)


def test_command_line_split_units_gives_the_same_run_up_to_rounding(tmp_path):
    """``python -m minimf.train --split-units 2``: metrics within float32 rounding drift of the run
    without it (losses to 1e-4, accuracies to 2 test examples of 500)."""
    quick = ["--train-subset", "1000", "--test-subset", "500", "--hidden", "32", "24", "--epochs", "2", "--no-progress"]
    runs = {}
    for name, extra in (("sequential", []), ("split", ["--split-units", "2"])):
        assert main(quick + extra + ["--out", str(tmp_path / name)]) == 0
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    for a, b in zip(runs["sequential"], runs["split"]):
        np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-4)
        for key in ("test_acc_bp", "test_acc_ff", "layer_test_acc"):
            np.testing.assert_allclose(b[key], a[key], atol=2 / 500, err_msg=key)


@pytest.mark.parametrize("args, message", [
    (["--algo", "bp", "--split-units", "2"], "--split-units is for --algo mf --arch mlp"),
    (["--arch", "cnn", "--split-units", "2"], "--split-units is for --algo mf --arch mlp"),
    (["--split-units", "2", "--split-batch", "2"], "choose one way to train in parallel"),
    (["--split-units", "2", "--backend", "cupy"], "it needs --backend numpy"),
])
def test_command_line_split_units_errors(args, message, capsys):
    with pytest.raises(SystemExit):
        main(args)
    assert message in capsys.readouterr().err


def test_command_line_notes_a_multithreaded_blas(monkeypatch, capsys):
    """Threads of its own on top of a BLAS that uses every core fight over the cores: say so."""
    quick = ["--train-subset", "200", "--test-subset", "100", "--hidden", "8", "--epochs", "1", "--no-progress",
             "--split-units", "2"]
    for var in BLAS_THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    assert main(quick) == 0
    assert "start it with OPENBLAS_NUM_THREADS=1" in capsys.readouterr().err
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert main(quick) == 0
    assert "OPENBLAS_NUM_THREADS" not in capsys.readouterr().err
