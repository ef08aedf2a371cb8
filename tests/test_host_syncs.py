"""No host synchronisation inside a training step or an evaluation batch (issue 15), counted by the
strict CuPy stand-in (minimf/testing/strict_cupy.py): every device-to-host transfer adds one to
``host_syncs()``. Where the "cupy" backend is a real GPU nothing counts them, so these tests skip.

A user's own ``train_step(x, y)`` still checks the values of x and y: two host syncs (NaN/inf, the
label range). ``python -m minimf.train`` checks its data set once and steps with ``validate=False``.
"""
import numpy as np
import pytest

from minimf import BackpropNet, ForwardForwardNet, MonoForwardCNN, MonoForwardNet
from minimf.backend import get_backend
from minimf.parallel.pipeline import train_pipelined
from minimf.train import main

STEPS = 20


@pytest.fixture
def xp():
    xp = get_backend("cupy")
    if not hasattr(xp, "host_syncs"):
        pytest.skip("real CuPy does not count host syncs; the strict stand-in does")
    return xp


def device_batches(xp, example_shape, n=STEPS, size=8, classes=5, seed=0):
    """``n`` batches gathered from a data set on the device, as minimf.train gathers them."""
    rng = np.random.default_rng(seed)
    x_all = xp.asarray(rng.standard_normal((n * size, *example_shape)).astype("float32"))
    y_all = xp.asarray(rng.integers(0, classes, n * size))
    order = xp.asarray(rng.permutation(n * size))
    return [(x_all[order[s:s + size]], y_all[order[s:s + size]]) for s in range(0, n * size, size)]


NETS = {
    "mf": lambda: MonoForwardNet(sizes=[12, 10, 8], num_classes=5, backend="cupy", seed=1),
    "bp": lambda: BackpropNet(sizes=[12, 10, 8], num_classes=5, backend="cupy", seed=1),
    "ff": lambda: ForwardForwardNet(sizes=[12, 10, 8], num_classes=5, backend="cupy", seed=1),
    "mf-cnn": lambda: MonoForwardCNN(input_shape=(1, 8, 8), channels=(2, 3), num_classes=5, backend="cupy",
                                     seed=1),
}


def syncs_of(xp, work):
    before = xp.host_syncs()
    result = work()
    return xp.host_syncs() - before, result


@pytest.mark.parametrize("name", list(NETS))
def test_training_steps_make_no_host_sync(xp, name):
    net = NETS[name]()
    batches = device_batches(xp, net.input_shape)
    syncs, losses = syncs_of(xp, lambda: [net.train_step(x, y, validate=False) for x, y in batches])
    assert syncs == 0, f"{syncs} host syncs in {STEPS} steps of {name}"
    last = losses[-1][0] if isinstance(losses[-1], list) else losses[-1]
    assert float(last) > 0                                 # the losses are there, read when wanted


def test_checking_a_users_batch_costs_two_syncs_a_step(xp):
    """What validation costs (and proof that the counter sees syncs in a step): NaN/inf and the
    label range, one transfer each."""
    net = NETS["mf"]()
    batches = device_batches(xp, net.input_shape)
    syncs, _ = syncs_of(xp, lambda: [net.train_step(x, y) for x, y in batches])
    assert syncs == 2 * STEPS


def test_the_old_per_layer_float_would_be_caught(xp):
    """Reading every layer's loss with float() in the step, as the code did before, is L syncs a step."""
    net = NETS["mf"]()
    batches = device_batches(xp, net.input_shape)
    syncs, _ = syncs_of(xp, lambda: [[float(v) for v in net.train_step(x, y, validate=False)] for x, y in batches])
    assert syncs == len(net.layers) * STEPS


@pytest.mark.parametrize("name", ["mf", "mf-cnn"])
def test_the_pipeline_makes_no_host_sync(xp, name):
    net = NETS[name]()
    batches = device_batches(xp, net.input_shape)
    syncs, losses = syncs_of(xp, lambda: train_pipelined(net, iter(batches), validate=False))
    assert syncs == 0 and len(losses) == STEPS


@pytest.mark.parametrize("name", list(NETS))
def test_evaluation_reads_its_counts_once(xp, name):
    """However many batches, evaluate() makes one transfer (validate=False) or three (checks too)."""
    net = NETS[name]()
    x, y = device_batches(xp, net.input_shape, n=1, size=50)[0]
    for batch_size, _ in ((7, "8 batches"), (50, "1 batch")):
        syncs, result = syncs_of(xp, lambda: net.evaluate(x, y, batch_size=batch_size, validate=False))
        assert syncs == 1, f"{syncs} syncs with batch size {batch_size}"
    syncs, _ = syncs_of(xp, lambda: net.evaluate(x, y, batch_size=7))
    assert syncs == 3


def epoch_syncs(xp, capsys, subset, extra):
    args = ["--backend", "cupy", "--train-subset", str(subset), "--test-subset", "100", "--hidden", "16",
            "--epochs", "1", "--batch-size", "50", "--no-progress", *extra]
    syncs, code = syncs_of(xp, lambda: main(args))
    capsys.readouterr()
    assert code == 0
    return syncs


@pytest.mark.parametrize("extra", [[], ["--pipeline"], ["--algo", "bp"]])
def test_an_epoch_of_the_command_line_syncs_as_often_whatever_its_steps(xp, capsys, extra):
    """Syncs happen per epoch (losses read once, evaluation, checks of the data set), never per step:
    an epoch of 20 steps makes exactly as many as an epoch of 4."""
    assert epoch_syncs(xp, capsys, 1000, extra) == epoch_syncs(xp, capsys, 200, extra)
