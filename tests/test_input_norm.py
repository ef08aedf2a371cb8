"""Layer-normalised layer inputs for Mono-Forward (``MonoForwardNet(..., input_norm="layer")``,
``--input-norm layer``; issue 19's remedy for deep MF, minimf/rules/mono_forward.py).

Gradient checks in float64 of every layer's local loss L_i with its normalised input, with a must-fail
case (the gradients of the same weights without the normalisation); the normalisation itself (DF-3);
what must stay as it was (the initial weights of a seed, the default's numbers); the trainers that go
through a layer (pipeline, unit split, batch split), both backends, host syncs; the command line,
config.json and --resume.
"""
import json

import numpy as np
import pytest

from minimf import MonoForwardGlobalNet, MonoForwardNet
from minimf.backend import get_backend
from minimf.nn.gradcheck import KINK_TOL, GradientCheckError, check_gradients
from minimf.nn.losses import softmax_cross_entropy
from minimf.parallel.batch_split import train_batch_split
from minimf.parallel.pipeline import train_pipelined
from minimf.parallel.unit_split import train_unit_split
from minimf.train import main
from training_helpers import assert_usage_error, make_batches, parameter_pairs, sequential_run

CLASSES = 3
SIZES = [6, 7, 6, 5]
SEED = 6          # a seed whose ReLU inputs on the batch below all lie at least 0.06 from 0 (checked)
MARGIN = 2e-3     # the smallest |z| allowed: far above h = 1e-5 times any input


def net_of(backend="numpy", input_norm="layer", seed=SEED, bias=True, kind=MonoForwardNet):
    """A float64 MF net 6 -> 7 -> 6 -> 5 with 3 classes."""
    return kind(sizes=SIZES, num_classes=CLASSES, backend=backend, seed=seed, bias=bias, dtype="float64",
                input_norm=input_norm)


def batch(xp, n=4):
    rng = np.random.default_rng(1234)
    return xp.asarray(rng.standard_normal((n, 6))), xp.asarray(rng.integers(0, CLASSES, n))


def layer_norm_by_hand(x, eps=1e-5):
    """(DF-3) written out: every row minus its mean, over the square root of its variance plus eps."""
    centred = x - x.sum(axis=1, keepdims=True) / x.shape[1]
    return centred / ((centred * centred).sum(axis=1, keepdims=True) / x.shape[1] + eps) ** 0.5


def local_loss(layer, x_in, y, zs=None):
    """L_i from scratch: cross-entropy of softmax(relu(LN(x_in) W + b) M^T); x_in is a constant."""
    z = layer_norm_by_hand(x_in) @ layer.W + (layer.b if layer.b is not None else 0)
    if zs is not None:
        zs.append(z)
    return softmax_cross_entropy((z * (z > 0)) @ layer.M.T, y)[0]


def host(a):
    return np.asarray(a.tolist())


# --- the gradient of each local loss, with the normalised input ----------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_local_gradients_with_layer_normalised_inputs(backend, bias):
    """Every layer's W, b, M against centred differences of its own L_i, its input a_(i-1) held
    constant: the normalisation is part of the forward map and needs no backward of its own."""
    xp = get_backend(backend)
    net = net_of(backend, bias=bias)
    x, y = batch(xp)
    inputs = net.layer_inputs(x)
    grads = net.local_gradients(x, y)
    for i, layer in enumerate(net.layers):
        zs = []
        local_loss(layer, inputs[i], y, zs)
        assert float(abs(zs[0]).min()) > MARGIN, "a ReLU input too near its kink for the check"
        params = {k: v for k, v in layer.params.items() if v is not None}
        errors = check_gradients(lambda: local_loss(layer, inputs[i], y), params, grads[i], tol=KINK_TOL)
        print(f"input_norm layer, layer {i + 1}:", {k: f"{v:.1e}" for k, v in errors.items()})
        assert set(errors) == ({"W", "b", "M"} if bias else {"W", "M"})


def test_gradients_without_the_normalisation_are_rejected():
    """Must fail: the same weights' gradients taken on the raw input (input_norm "none": dW = a^T dz
    instead of x^T dz) are not those of the loss with the normalised input."""
    xp = get_backend("numpy")
    x, y = batch(xp)
    net, plain = net_of(), net_of(input_norm="none")
    inputs = net.layer_inputs(x)
    wrong = plain.local_gradients(x, y)[0]           # layer 1: the same input x, not normalised
    with pytest.raises(GradientCheckError, match="W"):
        check_gradients(lambda: local_loss(net.layers[0], inputs[0], y), {"W": net.layers[0].W},
                        {"W": wrong["W"]}, tol=KINK_TOL)


def test_the_normalisation_is_df3():
    """Every row: mean 0, variance 1 (up to eps), and the layer's dense_input is the hand-written one."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 9)) * np.array([[1e-3], [0.1], [1.0], [30.0], [1.0]]) + 4.0
    out = net_of().layers[0].dense_input(x)
    np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=1), x.var(axis=1) / (x.var(axis=1) + 1e-5), rtol=1e-12)
    np.testing.assert_allclose(out, layer_norm_by_hand(x), rtol=1e-12)
    assert net_of(input_norm="none").layers[0].dense_input(x) is x


# --- what stays as it was ----------------------------------------------------------------------------

def test_same_seed_same_initial_weights_with_or_without():
    with_norm, without = net_of().state_dict(), net_of(input_norm="none").state_dict()
    assert with_norm.keys() == without.keys()
    for key in with_norm:
        np.testing.assert_array_equal(with_norm[key], without[key])


def test_the_default_is_no_normalisation():
    """input_norm "none" (the default) trains as MF always did: the same numbers as a net built
    without the argument, and other numbers than with "layer"."""
    batches = make_batches((20,), n=4, size=16)
    make = lambda **kw: MonoForwardNet(sizes=[20, 12, 10], num_classes=5, seed=0, **kw)
    default, none, layer = make(), make(input_norm="none"), make(input_norm="layer")
    expected = sequential_run(default, batches)
    assert [[float(v) for v in s] for s in sequential_run(none, batches)] == [[float(v) for v in s] for s in expected]
    assert [float(v) for v in sequential_run(layer, batches)[-1]] != [float(v) for v in expected[-1]]


def test_unknown_norm_and_global_credit_are_refused():
    with pytest.raises(ValueError, match="unknown input_norm 'batch'"):
        MonoForwardNet(sizes=[6, 5], num_classes=3, input_norm="batch")
    with pytest.raises(ValueError, match="MonoForwardGlobalNet does not offer input_norm='layer'"):
        MonoForwardGlobalNet(sizes=[6, 5], num_classes=3, input_norm="layer")


# --- the trainers that go through a layer ------------------------------------------------------------

def normed_net():
    return MonoForwardNet(sizes=[20, 16, 12], num_classes=5, seed=0, lr=3e-3, input_norm="layer")


@pytest.mark.parametrize("trainer", ["pipeline", "unit split 1", "unit split 2", "batch split 2"])
def test_parallel_trainers_train_the_normalised_net(trainer):
    """The pipeline gives the sequential run bit for bit, the unit split with one thread too and with
    two up to float rounding, the batch split up to rounding."""
    batches = make_batches((20,), n=4, size=16)
    reference = normed_net()
    expected = sequential_run(reference, batches)
    net = normed_net()
    if trainer == "pipeline":
        losses = train_pipelined(net, batches)
    elif trainer.startswith("unit"):
        losses = train_unit_split(net, batches, threads=int(trainer[-1]))
    else:
        losses = train_batch_split(net, batches, threads=2)
    exact = trainer in ("pipeline", "unit split 1")
    np.testing.assert_allclose(np.asarray(losses, dtype=float), np.asarray(expected, dtype=float),
                               rtol=0 if exact else 1e-5)
    for label, a, b in parameter_pairs(net, reference):
        if exact:
            np.testing.assert_array_equal(a, b, err_msg=label)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=label)


def test_both_backends_and_no_host_sync_in_a_step(backend):
    """The "cupy" run (the strict stand-in here) gives NumPy's numbers, and a step reads nothing back."""
    xp = get_backend(backend)
    batches = [(xp.asarray(x), xp.asarray(y)) for x, y in make_batches((20,), n=6, size=16)]
    net = normed_net() if backend == "numpy" else MonoForwardNet(
        sizes=[20, 16, 12], num_classes=5, seed=0, lr=3e-3, input_norm="layer", backend=backend)
    before = xp.host_syncs() if hasattr(xp, "host_syncs") else None
    losses = [net.train_step(x, y, validate=False) for x, y in batches]
    if before is not None:
        assert xp.host_syncs() == before
    losses = np.asarray(xp.stack([v for row in losses for v in row]).tolist())
    expected = sequential_run(normed_net(), make_batches((20,), n=6, size=16))
    expected = np.asarray([float(v) for row in expected for v in row])
    if backend == "numpy" or hasattr(xp, "host_syncs"):
        np.testing.assert_array_equal(losses, expected)
    else:                                             # a GPU: cuBLAS rounds otherwise
        np.testing.assert_allclose(losses, expected, rtol=1e-4, atol=1e-6)


# --- the command line ------------------------------------------------------------------------------

TINY = ["--train-subset", "256", "--test-subset", "128", "--hidden", "16", "16", "--batch-size", "64",
        "--no-progress", "--lr-schedule", "constant"]    # resumed with more epochs: no cosine to stretch


def test_cli_records_input_norm_and_resume_refuses_another(tmp_path, capsys):
    assert main(["--input-norm", "layer", *TINY, "--epochs", "1", "--out", str(tmp_path / "a")]) == 0
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["settings"]["input_norm"] == "layer"
    with pytest.raises(SystemExit) as exit_info:
        main(["--resume", str(tmp_path / "a"), "--input-norm", "none"])
    assert exit_info.value.code == 2
    assert "--input-norm none (recorded: layer)" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "a"), "--epochs", "2"]) == 0
    assert main(["--input-norm", "layer", *TINY, "--epochs", "2", "--out", str(tmp_path / "b")]) == 0
    assert main([*TINY, "--epochs", "2", "--out", str(tmp_path / "plain")]) == 0
    resumed, straight, plain = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("a", "b", "plain"))
    without_seconds = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]
    assert without_seconds(resumed) == without_seconds(straight)      # resumed with the recorded norm
    assert plain[-1]["train_loss"] != straight[-1]["train_loss"]       # and it is another net than without
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["settings"]["input_norm"] == "none"


@pytest.mark.parametrize("args, message", [
    (["--algo", "bp", "--input-norm", "layer"], "--input-norm layer is for --algo mf --arch mlp, not --algo bp"),
    (["--arch", "cnn", "--input-norm", "layer"], "not --algo mf --arch cnn"),
    (["--credit", "global", "--input-norm", "layer"], "--input-norm layer does not go with --credit global"),
    (["--input-norm", "batch"], "invalid choice"),
])
def test_cli_input_norm_usage_errors(args, message, capsys):
    assert_usage_error(main, args, message, capsys)
