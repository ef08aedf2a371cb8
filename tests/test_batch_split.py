"""Batch-split (data-parallel) training (minimf/parallel/batch_split.py) against the sequential ``train_step``.

One thread, one part: the same operations on the same numbers, so the same parameters bit for bit.
Several threads or micro-batches: the parts' gradients are summed, weighted by their sizes, so
the results agree to float rounding (checked in float64). The comparison is shown to catch a
wrong weighting; the parts run at the same time; bad settings are clear errors.
"""
import json
import threading

import numpy as np
import pytest
import training_helpers
from training_helpers import parameter_pairs, sequential_run, use_rates

from minimf import BackpropCNN, BackpropNet, DirectFeedbackAlignmentNet, FeedbackAlignmentCNN, MonoForwardCNN, MonoForwardNet
from minimf.parallel import batch_split
from minimf.parallel.batch_split import micro_batches, train_batch_split
from minimf.train import main

STEPS = 3


def mf_mlp(dtype="float32", optimizer="adam"):
    return MonoForwardNet(sizes=[20, 16, 12], num_classes=5, seed=3, dtype=dtype, optimizer=optimizer,
                          lr=1e-3 if optimizer == "adam" else 0.1)


def bp_mlp(dtype="float32", optimizer="adam"):
    return BackpropNet(sizes=[20, 16, 12], num_classes=5, seed=3, dtype=dtype, optimizer=optimizer,
                       lr=1e-3 if optimizer == "adam" else 0.1)


def mf_cnn(dtype="float32", optimizer="adam"):
    return MonoForwardCNN(input_shape=(1, 8, 8), channels=(3, 4), num_classes=5, seed=3, dtype=dtype,
                          optimizer=optimizer)


def bp_cnn(dtype="float32", optimizer="adam"):
    return BackpropCNN(input_shape=(1, 8, 8), channels=(3, 4), num_classes=5, seed=3, dtype=dtype,
                       optimizer=optimizer)


def fa_cnn(dtype="float32", optimizer="adam"):
    return FeedbackAlignmentCNN(input_shape=(1, 8, 8), channels=(3, 4), num_classes=5, seed=3, dtype=dtype,
                                optimizer=optimizer)


def dfa_mlp(dtype="float32", optimizer="adam"):
    return DirectFeedbackAlignmentNet(sizes=[20, 16, 12], num_classes=5, seed=3, dtype=dtype, optimizer=optimizer)


def mf_cnn_channel_groups(dtype="float32", optimizer="adam"):
    """DeeperForward's read-out: each block's input layer-normalised per example, channel groups."""
    return MonoForwardCNN(input_shape=(1, 8, 8), channels=(5, 10), num_classes=5, seed=3, dtype=dtype,
                          optimizer=optimizer, readout="channel-group")


NETS = {"MF MLP": (mf_mlp, (20,)), "BP MLP": (bp_mlp, (20,)), "MF CNN": (mf_cnn, (1, 8, 8)),
        "MF CNN channel-group": (mf_cnn_channel_groups, (1, 8, 8)), "BP CNN": (bp_cnn, (1, 8, 8)),
        "FA CNN": (fa_cnn, (1, 8, 8)), "DFA MLP": (dfa_mlp, (20,))}


def make_batches(example_shape, n=STEPS, size=10, seed=0):
    return training_helpers.make_batches(example_shape, n, size, seed)


@pytest.mark.parametrize("name", NETS)
def test_one_thread_equals_train_step_bit_for_bit(name):
    make_net, shape = NETS[name]
    batches = make_batches(shape)
    sequential, split_net = make_net(), make_net()
    expected = sequential_run(sequential, batches)
    assert train_batch_split(split_net, batches, threads=1) == expected       # floats compared exactly
    for label, a, b in parameter_pairs(sequential, split_net):
        np.testing.assert_array_equal(b, a, err_msg=label)


@pytest.mark.parametrize("threads, micro_batch", [(2, None), (3, None), (2, 3), (1, 4), (4, 1)])
@pytest.mark.parametrize("name", NETS)
def test_threads_and_micro_batches_equal_train_step_up_to_rounding(name, threads, micro_batch):
    """float64, batches of 10 examples: 2 or 3 parts, parts of 3 (3+3+3+1), of 4, of 1 example."""
    make_net, shape = NETS[name]
    batches = make_batches(shape)
    rates = [1e-3 * (1 + k) for k in range(STEPS)]
    sequential, split_net = make_net("float64"), make_net("float64")
    expected = sequential_run(sequential, batches, rates)
    losses = train_batch_split(use_rates(split_net, rates), batches, threads=threads, micro_batch=micro_batch)
    np.testing.assert_allclose(losses, expected, rtol=1e-12)
    for label, a, b in parameter_pairs(sequential, split_net):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, err_msg=label)


def test_sgd_with_momentum_in_parts():
    batches = make_batches((20,))
    sequential, split_net = bp_mlp("float64", "sgd"), bp_mlp("float64", "sgd")
    for net in (sequential, split_net):
        for optimizer in net.optimizers:
            optimizer.momentum = 0.9
    sequential_run(sequential, batches)
    train_batch_split(split_net, batches, threads=2, micro_batch=3)
    for label, a, b in parameter_pairs(sequential, split_net):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, err_msg=label)


def test_a_wrong_weighting_is_caught(monkeypatch):
    """The comparison above is not vacuous: weighting every part by 1/K instead of n_k/N (parts of
    3, 3, 3 and 1 examples) changes the parameters far beyond rounding."""
    batches = make_batches((20,))
    sequential, split_net = bp_mlp("float64", "sgd"), bp_mlp("float64", "sgd")
    sequential_run(sequential, batches)
    monkeypatch.setattr(batch_split, "micro_batches", lambda n, threads, micro_batch: [
        slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)])
    scaled = batch_split._scaled_copy
    monkeypatch.setattr(batch_split, "_scaled_copy", lambda g, weight: scaled(g, 0.25))
    train_batch_split(split_net, batches, threads=1)
    with pytest.raises(AssertionError):
        for label, a, b in parameter_pairs(sequential, split_net):
            np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, err_msg=label)


def test_float32_threads_stay_close_to_train_step():
    batches = make_batches((1, 8, 8), size=32)
    sequential, split_net = bp_cnn(), bp_cnn()
    expected = sequential_run(sequential, batches)
    np.testing.assert_allclose(train_batch_split(split_net, batches, threads=2, micro_batch=8), expected, rtol=1e-5)
    for label, a, b in parameter_pairs(sequential, split_net):
        np.testing.assert_allclose(b, a, atol=1e-4, err_msg=label)   # Adam's steps are ~1e-3


def test_parts_run_at_the_same_time():
    """Thread 0's part waits until thread 1's part has started: taking turns would time out."""
    net = bp_mlp()
    second_started = threading.Event()
    loss_and_gradients = net.loss_and_gradients

    def watched(x, y):
        if threading.current_thread() is threading.main_thread():
            assert second_started.wait(timeout=10), "the second part never started while the first ran"
        else:
            second_started.set()
        return loss_and_gradients(x, y)

    net.loss_and_gradients = watched
    train_batch_split(net, make_batches((20,), n=1), threads=2)


def test_an_error_in_a_part_is_raised_and_every_thread_ends():
    net = bp_mlp()

    def broken(x, y):
        raise RuntimeError("a part broke")

    net.loss_and_gradients = broken
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="a part broke"):
        train_batch_split(net, make_batches((20,)), threads=3)
    assert threading.active_count() == before


def test_a_bad_batch_is_a_clear_error():
    batches = make_batches((20,))
    batches[1] = (batches[1][0], np.full(10, 9))          # label 9 of 5 classes
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        train_batch_split(bp_mlp(), batches, threads=2)


@pytest.mark.parametrize("kwargs, message", [({"threads": 0}, "positive integer"),
                                             ({"micro_batch": 0}, "micro_batch must be"),
                                             ({"micro_batch": 2.5}, "micro_batch must be")])
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_batch_split(bp_mlp(), make_batches((20,)), **kwargs)


def test_models_without_loss_and_gradients_are_refused():
    class NoGradients:
        xp = np
    with pytest.raises(ValueError, match="needs a model with loss_and_gradients"):
        train_batch_split(NoGradients(), [], threads=2)


def test_micro_batches_cover_the_batch():
    assert micro_batches(10, 3, None) == [slice(0, 3), slice(3, 6), slice(6, 10)]
    assert micro_batches(2, 4, None) == [slice(0, 1), slice(1, 2)]           # fewer examples than threads
    assert micro_batches(10, 2, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]


def quick_run(tmp_path, name, extra):
    quick = ["--train-subset", "1000", "--test-subset", "500", "--hidden", "32", "24", "--epochs", "2",
             "--lr-schedule", "cosine", "--no-progress"]
    assert main(quick + extra + ["--out", str(tmp_path / name)]) == 0
    record = json.loads((tmp_path / name / "metrics.json").read_text())
    for r in record:
        r.pop("seconds")
    return record


@pytest.mark.parametrize("algo", ["mf", "bp"])
def test_command_line_split_batch_gives_the_same_run_up_to_rounding(tmp_path, algo):
    """``python -m minimf.train --split-batch 2 --micro-batch 100``: metrics within float32 rounding
    drift of the run without it (losses to 1e-4, accuracies to 2 test examples of 500)."""
    sequential = quick_run(tmp_path, "sequential", ["--algo", algo])
    split = quick_run(tmp_path, "split", ["--algo", algo, "--split-batch", "2", "--micro-batch", "100"])
    for a, b in zip(sequential, split):
        np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-4)
        for key in a:
            if "test_acc" in key:                  # test_acc, test_acc_bp, test_acc_ff, layer_test_acc
                np.testing.assert_allclose(b[key], a[key], atol=2 / 500, err_msg=key)


@pytest.mark.parametrize("args, message", [
    (["--algo", "ff", "--split-batch", "2"], "--split-batch is for --algo"),
    (["--split-batch", "2", "--pipeline"], "choose one way to train in parallel"),
    (["--micro-batch", "10"], "--micro-batch goes with --split-batch"),
    (["--split-batch", "0"], "expected a positive number"),
])
def test_command_line_split_batch_errors(args, message, capsys):
    with pytest.raises(SystemExit):
        main(args)
    assert message in capsys.readouterr().err
