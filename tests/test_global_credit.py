"""Global credit (issue 19): MF's and FF's objectives with the summed loss backpropagated through all
layers (minimf/rules/global_credit.py).

Gradient checks in float64 against finite differences of the SUMMED loss sum_i L_i, for every
parameter of every layer, with must-fail cases (the local rule's gradients, a doubled gradient, the
normalisation's derivative left out); what must equal the local rule (initial weights, negative
labels, the top layer's gradient, the first step's losses); training on both backends; host syncs;
checkpoints; the batch split; and the command line's --credit.
"""
import json

import numpy as np
import pytest

from minimf import ForwardForwardGlobalNet, ForwardForwardNet, MonoForwardGlobalNet, MonoForwardNet
from minimf.backend import get_array_module, get_backend
from minimf.checkpoint import load, load_checkpoint, restore_training_state, save_checkpoint, training_state
from minimf.nn.gradcheck import (KINK_TOL, SMOOTH_TOL, GradientCheckError, check_gradients, check_layer,
                                 numerical_grad)
from minimf.nn.losses import softmax_cross_entropy
from minimf.nn.optim import Adam
from minimf.parallel.batch_split import train_batch_split
from minimf.rules import global_credit
from minimf.rules.forward_forward import EPS, embed_label, normalize
from minimf.rules.global_credit import normalize_backward
from minimf.train import main
from training_helpers import assert_usage_error, parameter_pairs, sequential_run

CLASSES = 3
SIZES = [6, 7, 6, 5]          # three layers, widths 5-7
MF_SEED, FF_SEED = 1, 16      # seeds whose ReLU inputs on the batch below all lie away from 0 (checked)
MARGIN = 2e-3                 # the smallest |z| allowed: far above h = 1e-5 times any input
RULES = ["mf", "ff"]


def mf_net(backend="numpy", seed=MF_SEED, bias=True, kind=MonoForwardGlobalNet):
    """A float64 MF net 6 -> 7 -> 6 -> 5 with 3 classes, global credit unless ``kind`` says otherwise."""
    return kind(sizes=SIZES, num_classes=CLASSES, backend=backend, seed=seed, bias=bias, dtype="float64")


def ff_net(backend="numpy", seed=FF_SEED, bias=True, kind=ForwardForwardGlobalNet, **kwargs):
    """A float64 FF net 6 -> 7 -> 6 -> 5 (labels in the first 3 inputs), threshold 0.5."""
    return kind(sizes=SIZES, num_classes=CLASSES, backend=backend, seed=seed, bias=bias, dtype="float64",
                threshold=0.5, **kwargs)


def batch(xp, n=4):
    """x (n, 6), labels and wrong labels, drawn on the host from a fixed seed and moved to xp."""
    rng = np.random.default_rng(1234)
    x, y = rng.standard_normal((n, 6)), rng.integers(0, CLASSES, n)
    y_neg = (y + rng.integers(1, CLASSES, n)) % CLASSES
    return xp.asarray(x), xp.asarray(y), xp.asarray(y_neg)


def params_of(layer):
    return {k: v for k, v in layer.params.items() if v is not None}


def host(a):
    return np.asarray(a.tolist())


# --- the summed losses, recomputed from scratch ---------------------------------------------------

def mf_summed_loss(net, x, y, zs=None):
    """sum_i L_i of MF: L_i = cross-entropy of softmax(a_i M_i^T), a_i = relu(a_{i-1} W_i + b_i), a_0 = x.
    ``zs`` (a list) collects every layer's ReLU input."""
    total, a = 0, x
    for layer in net.layers:
        z = a @ layer.W + (layer.b if layer.b is not None else 0)
        if zs is not None:
            zs.append(z)
        a = z * (z > 0)
        total = total + softmax_cross_entropy(a @ layer.M.T, y)[0]
    return total


def ff_summed_loss(net, x, y, y_neg, zs=None):
    """sum_i L_i of FF: positives and negatives through every layer, each normalised on entry;
    L_i = the mean over the 2N rows of softplus(-s (g_i - theta)), s = +1 (positive) or -1 (negative)."""
    xp = get_array_module(x)
    h = xp.concatenate([embed_label(x, y, CLASSES, net.label_value), embed_label(x, y_neg, CLASSES, net.label_value)])
    sign = xp.asarray(np.repeat([1.0, -1.0], x.shape[0]))
    total = 0
    for layer in net.layers:
        square = (h * h).sum(axis=1, keepdims=True)
        if layer.normalization == "rms":
            square = square / h.shape[1]
        z = (h / (xp.sqrt(square) + 1e-8)) @ layer.W + (layer.b if layer.b is not None else 0)
        if zs is not None:
            zs.append(z)
        h = xp.maximum(z, 0)
        g = (h * h).mean(axis=1) if layer.goodness_kind == "mean" else (h * h).sum(axis=1)
        total = total + xp.log1p(xp.exp(-sign * (g - layer.threshold))).mean()
    return total


def assert_relu_inputs_away_from_zero(zs):
    """The set-up's own check (not the code's): no ReLU input near its kink, no layer all on or all off."""
    for i, z in enumerate(zs):
        z = host(z)
        assert np.abs(z).min() > MARGIN, f"layer {i + 1}: a ReLU input within {MARGIN} of 0; choose another seed"
        assert 0.2 < (z > 0).mean() < 0.9, f"layer {i + 1}: {(z > 0).mean():.0%} of its units on"


def mf_case(backend="numpy", bias=True):
    """(net, x, y, summed loss as a function of nothing), the set-up checked."""
    xp = get_backend(backend)
    net = mf_net(backend, bias=bias)
    x, y, _ = batch(xp)
    zs = []
    mf_summed_loss(net, x, y, zs)
    assert_relu_inputs_away_from_zero(zs)
    return net, x, y, lambda: mf_summed_loss(net, x, y)


def ff_case(backend="numpy", bias=True, **kwargs):
    """(net, x, y, y_neg, summed loss as a function of nothing), the set-up checked."""
    xp = get_backend(backend)
    net = ff_net(backend, bias=bias, **kwargs)
    x, y, y_neg = batch(xp)
    zs = []
    ff_summed_loss(net, x, y, y_neg, zs)
    assert_relu_inputs_away_from_zero(zs)
    return net, x, y, y_neg, lambda: ff_summed_loss(net, x, y, y_neg)


# --- gradient checks of the summed loss ------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_mf_global_gradients_are_those_of_the_summed_loss(backend, bias):
    net, x, y, summed = mf_case(backend, bias)
    grads = net.gradients(x, y)
    assert len(grads) == 3
    for i, layer in enumerate(net.layers):
        errors = check_gradients(summed, params_of(layer), grads[i], tol=KINK_TOL)
        print(f"MF global, layer {i + 1}:", {k: f"{v:.1e}" for k, v in errors.items()})
        assert set(errors) == ({"W", "b", "M"} if bias else {"W", "M"})


@pytest.mark.parametrize("normalization, goodness, bias", [
    ("rms", "mean", True), ("length", "mean", True), ("rms", "sum", False), ("length", "sum", True)])
def test_ff_global_gradients_are_those_of_the_summed_loss(backend, normalization, goodness, bias):
    net, x, y, y_neg, summed = ff_case(backend, bias, normalize=normalization, goodness=goodness)
    grads = net.gradients(x, y, negative_labels=y_neg)
    assert len(grads) == 4                                        # three layers, then the read-out
    for i, layer in enumerate(net.layers):
        errors = check_gradients(summed, params_of(layer), grads[i], tol=KINK_TOL)
        print(f"FF global ({normalization}, {goodness}), layer {i + 1}:", {k: f"{v:.1e}" for k, v in errors.items()})
        assert set(errors) == ({"W", "b"} if bias else {"W"})


@pytest.mark.parametrize("kind", ["rms", "length"])
def test_normalize_backward_against_finite_differences(kind):
    """The derivative of x / (r + eps), rows of very different sizes; an all-zero row stays finite."""
    rng = np.random.default_rng(5)       # not check_layer's seed 0: its dy would be parallel to x
    x = rng.standard_normal((4, 5)) * np.array([[0.1], [1.0], [3.0], [20.0]])
    errors = check_layer(lambda x: (normalize(x, kind), x), lambda dy, x: normalize_backward(dy, x, kind),
                         {"x": x}, tol=SMOOTH_TOL)
    print(f"normalize_backward ({kind}):", errors)
    dy = rng.standard_normal((2, 5))
    dx = normalize_backward(dy, np.zeros((2, 5)), kind)
    np.testing.assert_allclose(dx, dy / EPS)                      # r = 0: only the first term


def test_normalize_backward_must_fail_without_its_second_term():
    """The check above rejects the derivative of x / (r + eps) taken with r held constant."""
    x = np.random.default_rng(5).standard_normal((3, 5))
    scale = lambda x: np.sqrt((x * x).mean(axis=1, keepdims=True)) + EPS
    with pytest.raises(GradientCheckError):
        check_layer(lambda x: (normalize(x), x), lambda dy, x: dy / scale(x), {"x": x})


# --- must fail: what is NOT the gradient of the summed loss -----------------------------------------

def test_mf_local_gradients_are_rejected_below_the_top(backend):
    """MF's local gradients are those of L_i alone: for the lower layers the check of the summed loss
    rejects them; for the top layer (nothing above it) they are the global ones, and every M_i's
    gradient is the same in both (no other loss holds M_i)."""
    net, x, y, summed = mf_case(backend)
    local, grads = net.local_gradients(x, y), net.gradients(x, y)
    for i in (0, 1):
        with pytest.raises(GradientCheckError, match="W"):
            check_gradients(summed, {"W": net.layers[i].W}, {"W": local[i]["W"]}, tol=KINK_TOL)
    for name in "WbM":
        np.testing.assert_array_equal(host(grads[2][name]), host(local[2][name]))
    for i in range(3):
        np.testing.assert_array_equal(host(grads[i]["M"]), host(local[i]["M"]))
    reference = mf_net(backend, kind=MonoForwardNet).local_gradients(x, y)   # the local rule's own class
    for name in "WbM":
        np.testing.assert_array_equal(host(local[0][name]), host(reference[0][name]))


@pytest.mark.parametrize("normalization", ["rms", "length"])
def test_ff_local_gradients_are_rejected_below_the_top(backend, normalization):
    net, x, y, y_neg, summed = ff_case(backend, normalize=normalization)
    local = net.local_gradients(x, y, negative_labels=y_neg)
    grads = net.gradients(x, y, negative_labels=y_neg)
    for i in (0, 1):
        with pytest.raises(GradientCheckError, match="W"):
            check_gradients(summed, {"W": net.layers[i].W}, {"W": local[i]["W"]}, tol=KINK_TOL)
    for i in (2, 3):                                  # the top layer, and the read-out (its own loss)
        for name in "Wb":
            np.testing.assert_array_equal(host(grads[i][name]), host(local[i][name]))


@pytest.mark.parametrize("wrong", ["mf_doubled", "mf_without_own_loss", "ff_doubled",
                                   "ff_normalisation_derivative_left_out", "ff_normalisation_as_identity"])
def test_wrong_global_gradients_are_rejected(monkeypatch, wrong):
    """The checks above catch: a factor 2; layer 1 credited with L_2 + L_3 but not its own L_1; and
    the error from above passed through the normalisation as x / (r + eps) with r held constant,
    or as if there were no normalisation at all."""
    if wrong.startswith("mf"):
        net, x, y, summed = mf_case()
        W = net.layers[0].W
        if wrong == "mf_doubled":
            dW = 2 * net.gradients(x, y)[0]["W"]
        else:
            above = lambda: summed() - softmax_cross_entropy(net.layers[0].goodness(net.layers[0].forward(x)), y)[0]
            dW = numerical_grad(above, W)
    else:
        net, x, y, y_neg, summed = ff_case()
        W = net.layers[0].W
        if wrong == "ff_normalisation_derivative_left_out":
            scale = lambda h: np.sqrt((h * h).mean(axis=1, keepdims=True)) + EPS
            monkeypatch.setattr(global_credit, "normalize_backward", lambda dy, h, kind: dy / scale(h))
        elif wrong == "ff_normalisation_as_identity":
            monkeypatch.setattr(global_credit, "normalize_backward", lambda dy, h, kind: dy)
        dW = net.gradients(x, y, negative_labels=y_neg)[0]["W"]
        if wrong == "ff_doubled":
            dW = 2 * dW
    with pytest.raises(GradientCheckError):
        check_gradients(summed, {"W": W}, {"W": dW}, tol=KINK_TOL)


# --- what must equal the local rule ------------------------------------------------------------------

@pytest.mark.parametrize("rule", RULES)
def test_same_seed_same_initial_weights_as_the_local_rule(rule):
    ours_kind, local_kind = {"mf": (MonoForwardGlobalNet, MonoForwardNet),
                             "ff": (ForwardForwardGlobalNet, ForwardForwardNet)}[rule]
    nets = [kind(sizes=[12, 8, 6], num_classes=5, seed=seed)
            for kind, seed in ((ours_kind, 4), (local_kind, 4), (local_kind, 5))]
    ours, local, other = (net.state_dict() for net in nets)
    assert ours.keys() == local.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], local[key])
    assert any(not np.array_equal(ours[key], other[key]) for key in ours)      # another seed: other weights
    assert nets[0].CREDIT == "global" and nets[1].CREDIT == "local"
    if rule == "ff":                                                            # the same negative labels
        y = np.arange(200) % 5
        np.testing.assert_array_equal(nets[0].negative_labels(y), nets[1].negative_labels(y))


@pytest.mark.parametrize("rule", RULES)
def test_first_step_differs_from_the_local_rule_only_below_the_top(rule):
    """From the same seed on the same batch: the same losses (the same forward pass, and for FF the
    same negative labels), the same update of the top layer, every M_i and the read-out; another
    update of layer 1."""
    xp = get_backend("numpy")
    x, y, _ = batch(xp, n=8)
    if rule == "mf":
        ours, local = mf_net(), mf_net(kind=MonoForwardNet)
        same = [(2, "W"), (2, "b"), (0, "M"), (1, "M"), (2, "M")]
    else:
        ours, local = ff_net(), ff_net(kind=ForwardForwardNet)
        same = [(2, "W"), (2, "b")]
    ours_losses, local_losses = ours.train_step(x, y), local.train_step(x, y)
    assert [float(v) for v in ours_losses] == [float(v) for v in local_losses]
    for i, name in same:
        np.testing.assert_array_equal(ours.layers[i].params[name], local.layers[i].params[name])
    if rule == "ff":
        np.testing.assert_array_equal(ours.readout.W, local.readout.W)
    assert not np.allclose(ours.layers[0].W, local.layers[0].W, rtol=1e-6, atol=0)


@pytest.mark.parametrize("rule", RULES)
def test_train_step_is_gradients_then_adam(rule):
    """train_step == the global gradients on the un-updated network, then one Adam step each."""
    xp = get_backend("numpy")
    x, y, _ = batch(xp, n=8)
    net, reference = (mf_net(), mf_net()) if rule == "mf" else (ff_net(), ff_net())
    if rule == "mf":
        layers, grads = reference.layers, reference.gradients(x, y)
    else:
        layers = reference.layers + [reference.readout]
        grads = reference.gradients(x, y, negative_labels=reference.negative_labels(y))
    for layer, g in zip(layers, grads):
        Adam(lr=1e-3).step(layer.params, g)
    losses = net.train_step(x, y)
    assert len(losses) == (3 if rule == "mf" else 4)
    ours = net.layers + ([] if rule == "mf" else [net.readout])
    for a, b in zip(ours, layers):
        for name in a.params:
            np.testing.assert_array_equal(a.params[name], b.params[name])


# --- training ------------------------------------------------------------------------------------------

def prototype_data(n=256, d=20, classes=5, seed=0):
    """MNIST in miniature: each class a random prototype of d features, examples the prototype plus
    noise; float32 x (n, d), labels (n,)."""
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((classes, d))
    y = rng.integers(0, classes, n)
    return (prototypes[y] + 0.7 * rng.standard_normal((n, d))).astype(np.float32), y


def train_losses(rule, backend, steps=300, size=32):
    """Every step's losses (steps, L) of a float32 [20, 32, 32] net, cycling over prototype_data."""
    xp = get_backend(backend)
    kind = MonoForwardGlobalNet if rule == "mf" else ForwardForwardGlobalNet
    net = kind(sizes=[20, 32, 32], num_classes=5, backend=backend, seed=0, lr=3e-3)
    x, y = prototype_data()
    x, y = xp.asarray(x), xp.asarray(y)
    losses = []
    for step in range(steps):
        start = step % (x.shape[0] // size) * size
        losses.append(net.train_step(x[start:start + size], y[start:start + size], validate=False))
    return np.asarray(xp.stack([v for row in losses for v in row]).tolist()).reshape(steps, -1), net


@pytest.mark.parametrize("rule", RULES)
def test_training_reduces_every_loss_and_is_the_same_on_both_backends(backend, rule):
    """300 steps (float32): every layer's loss (and FF's read-out's) falls to under half its start
    (measured, means of the first and last 8 steps: MF 1.43, 1.56 -> 0.004, 0.000; FF 1.04, 0.99,
    1.59 -> 0.40, 0.12, 0.04), and the "cupy" run gives the NumPy run's numbers (the strict
    stand-in exactly; a GPU within float32 rounding, not measured here)."""
    losses, net = train_losses(rule, backend)
    assert net.xp is get_backend(backend) and str(net.layers[0].W.dtype) == "float32"
    first, last = losses[:8].mean(axis=0), losses[-8:].mean(axis=0)
    assert np.isfinite(losses).all() and (last < 0.5 * first).all(), (first, last)
    if backend == "cupy":
        expected = train_losses(rule, "numpy")[0]
        if hasattr(net.xp, "host_syncs"):             # the stand-in: NumPy underneath, bit for bit
            np.testing.assert_array_equal(losses, expected)
        else:                                         # a GPU: cuBLAS rounds otherwise, and 300 steps add up
            np.testing.assert_allclose(losses[:10], expected[:10], rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(losses, expected, rtol=5e-2, atol=1e-3)


@pytest.mark.parametrize("rule", RULES)
def test_a_training_step_makes_no_host_sync(rule):
    xp = get_backend("cupy")
    if not hasattr(xp, "host_syncs"):
        pytest.skip("real CuPy does not count host syncs; the strict stand-in does")
    kind = MonoForwardGlobalNet if rule == "mf" else ForwardForwardGlobalNet
    net = kind(sizes=[12, 10, 8], num_classes=5, backend="cupy", seed=1)
    x, y = prototype_data(n=64, d=12)
    x, y = xp.asarray(x), xp.asarray(y)
    before = xp.host_syncs()
    for start in range(0, 64, 16):
        net.train_step(x[start:start + 16], y[start:start + 16], validate=False)
    assert xp.host_syncs() == before
    net.train_step(x[:16], y[:16])                    # and the counter sees the checks of a user's batch
    assert xp.host_syncs() > before


@pytest.mark.parametrize("rule", RULES)
def test_checkpoint_round_trip_continues_the_same_run(tmp_path, rule):
    """The whole training state (parameters, Adam's m, v, t, FF's negative-label stream) written
    and read back: a net of another seed continues exactly as the original does."""
    kind = MonoForwardGlobalNet if rule == "mf" else ForwardForwardGlobalNet
    make = lambda seed: kind(sizes=[20, 16, 12], num_classes=5, seed=seed, lr=3e-3)
    x, y = prototype_data(n=96)
    net = make(0)
    for start in (0, 32):
        net.train_step(x[start:start + 32], y[start:start + 32])
    save_checkpoint(tmp_path / "ckpt", *training_state(net))
    fresh = make(99)
    restore_training_state(fresh, *load_checkpoint(tmp_path / "ckpt"))
    ours, theirs = fresh.train_step(x[64:], y[64:]), net.train_step(x[64:], y[64:])
    assert [float(v) for v in ours] == [float(v) for v in theirs]
    for label, a, b in parameter_pairs(fresh, net):
        np.testing.assert_array_equal(a, b, err_msg=label)
    stranger = make(99)                               # without the restore: other numbers
    assert [float(v) for v in stranger.train_step(x[64:], y[64:])] != [float(v) for v in theirs]


def test_mf_global_batch_split_is_the_global_step():
    """BATCH_SPLIT: the batch split (minimf/parallel/batch_split.py) steps with loss_and_gradients, the
    global gradients: one thread gives train_step's numbers bit for bit, two threads up to rounding."""
    x, y = prototype_data(n=96)
    batches = [(x[s:s + 32], y[s:s + 32]) for s in (0, 32, 64)]
    make = lambda: MonoForwardGlobalNet(sizes=[20, 16, 12], num_classes=5, seed=0, lr=3e-3)
    reference = make()
    expected = sequential_run(reference, batches)
    for threads in (1, 2):
        net = make()
        losses = train_batch_split(net, batches, threads=threads)
        np.testing.assert_allclose(np.asarray(losses), np.asarray(expected, dtype=float), rtol=1e-6)
        for label, a, b in parameter_pairs(net, reference):
            if threads == 1:
                np.testing.assert_array_equal(a, b, err_msg=label)
            else:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=label)
    local = MonoForwardNet(sizes=[20, 16, 12], num_classes=5, seed=0, lr=3e-3)
    train_batch_split(local, batches, threads=1)
    assert not np.allclose(local.layers[0].W, reference.layers[0].W)   # it is not the local rule's split


# --- the command line ----------------------------------------------------------------------------------

QUICK = ["--train-subset", "512", "--test-subset", "256", "--epochs", "1", "--hidden", "32", "32", "--no-progress",
         "--batch-size", "64", "--lr", "5e-3"]


def run(argv, capsys):
    code = main(argv)
    return code, capsys.readouterr()


def test_cli_mf_global_credit_runs_and_records_it(tmp_path, capsys):
    code, out = run(["--algo", "mf", "--credit", "global", *QUICK, "--out", str(tmp_path / "global")], capsys)
    assert code == 0 and "test bp" in out.out
    config = json.loads((tmp_path / "global" / "config.json").read_text())
    assert config["settings"]["credit"] == "global"
    record = json.loads((tmp_path / "global" / "metrics.json").read_text())[-1]
    assert len(record["train_loss"]) == 2 and len(record["layer_test_acc"]) == 2
    assert record["test_acc_ff"] > 0.4                  # 8 steps: above chance (10%); measured 55.5% (bp 35.5%)
    load(MonoForwardGlobalNet(sizes=[784, 32, 32]), tmp_path / "global" / "model.npz")
    assert run(["--algo", "mf", *QUICK, "--out", str(tmp_path / "local")], capsys)[0] == 0
    local = json.loads((tmp_path / "local" / "metrics.json").read_text())[-1]
    assert json.loads((tmp_path / "local" / "config.json").read_text())["settings"]["credit"] == "local"
    assert local["train_loss"] != record["train_loss"]  # another rule trained


def test_cli_ff_global_credit_runs(tmp_path, capsys):
    code, out = run(["--algo", "ff", "--credit", "global", *QUICK, "--out", str(tmp_path)], capsys)
    assert code == 0 and "one pass" in out.out
    record = json.loads((tmp_path / "metrics.json").read_text())[-1]
    assert len(record["train_loss"]) == 3                 # two layers and the read-out
    assert json.loads((tmp_path / "config.json").read_text())["settings"]["credit"] == "global"
    load(ForwardForwardGlobalNet(sizes=[784, 32, 32]), tmp_path / "model.npz")


@pytest.mark.parametrize("args, message", [
    (["--algo", "bp", "--credit", "global"], "--credit global is for --algo mf or ff with --arch mlp, not --algo bp"),
    (["--algo", "pepita", "--credit", "global"], "not --algo pepita --arch mlp"),
    (["--algo", "mf", "--arch", "cnn", "--credit", "global"], "not --algo mf --arch cnn"),
    (["--credit", "global", "--pipeline"], "--pipeline does not go with --algo mf --credit global"),
    (["--credit", "global", "--pipeline", "ray"], "every layer waits for the error of all the layers above it"),
    (["--credit", "global", "--split-units", "2"], "--split-units does not go with --algo mf --credit global"),
    (["--algo", "ff", "--credit", "global", "--split-batch", "2"], "--split-batch does not go with --algo ff"),
    (["--credit", "both"], "invalid choice"),
])
def test_cli_credit_usage_errors(args, message, capsys):
    assert_usage_error(main, args, message, capsys)


def test_resume_keeps_the_recorded_credit_and_refuses_another(tmp_path, capsys):
    tiny = ["--train-subset", "256", "--test-subset", "128", "--hidden", "16", "--batch-size", "64", "--no-progress",
            "--lr-schedule", "constant"]       # resumed with more epochs: a cosine decay would be stretched
    assert run(["--credit", "global", *tiny, "--epochs", "1", "--out", str(tmp_path / "a")], capsys)[0] == 0
    with pytest.raises(SystemExit) as exit_info:
        main(["--resume", str(tmp_path / "a"), "--credit", "local"])
    assert exit_info.value.code == 2
    assert "--credit local (recorded: global)" in capsys.readouterr().err
    assert run(["--resume", str(tmp_path / "a"), "--epochs", "2"], capsys)[0] == 0
    assert run(["--credit", "global", *tiny, "--epochs", "2", "--out", str(tmp_path / "b")], capsys)[0] == 0
    resumed, straight = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in "ab")
    without_seconds = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]
    assert without_seconds(resumed) == without_seconds(straight)      # as if it had never stopped
    assert json.loads((tmp_path / "a" / "config.json").read_text())["settings"]["credit"] == "global"
