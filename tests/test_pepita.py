"""PEPITA (minimf/rules/pepita.py). Its updates are not the gradient of any loss, so they are tested
against what they must equal and do:
  - with F = 0 the two passes agree: the hidden updates vanish and the output update is the
    delta rule, the true gradient of the cross-entropy (finite differences, float64);
  - with the random F the hidden update is NOT that gradient (the must-fail case);
  - a hand-computed update on a 2-2-2 net;
  - the sign convention: a few hundred steps reduce the loss on a tiny problem, and the
    opposite sign increases it;
  - shapes, the fixed and seeded F, saving, bad labels.
"""
import json

import numpy as np
import pytest

from minimf.rules.backprop import BackpropNet
from minimf.backend import to_numpy
from minimf.checkpoint import load, save
from minimf.datasets import load_mnist
from minimf.nn.gradcheck import KINK_TOL, GradientCheckError, check_gradients
from minimf.rules.pepita import F_SCALE, HE_GAIN, PepitaNet
from minimf.train import main


def net(backend="numpy", seed=3, bias=True, sizes=(6, 7, 5), lr=0.05, optimizer="sgd"):
    """A float64 PEPITA net 6 -> 7 -> 5 -> 3 classes (two hidden layers)."""
    return PepitaNet(sizes=list(sizes), num_classes=3, backend=backend, seed=seed, bias=bias, lr=lr,
                     optimizer=optimizer, dtype="float64")


def small_batch(xp, rng, n=5, d=6):
    return xp.asarray(rng.standard_normal((n, d))), xp.asarray(rng.integers(0, 3, n))


def test_shapes_and_parameter_count(xp, backend, rng):
    pep = net(backend)
    x, y = small_batch(xp, rng)
    updates = pep.gradients(x, y)
    assert [u["W"].shape for u in updates] == [(6, 7), (7, 5), (5, 3)]
    assert [u["b"].shape for u in updates] == [(7,), (5,), (3,)]
    assert pep.F.shape == (3, 6)
    assert pep.num_parameters() == net(bias=True).num_parameters() == 6 * 7 + 7 + 7 * 5 + 5 + 5 * 3 + 3
    assert pep.predict(x).shape == (5,)


def test_initialisation_is_he_uniform_and_f_is_scaled():
    pep, bp = net(), BackpropNet(sizes=[6, 7, 5], num_classes=3, seed=3, dtype="float64")
    np.testing.assert_allclose(pep.layers[0].W, HE_GAIN * bp.layers[0].W)   # same draw, sqrt(6) wider
    assert np.abs(pep.F).max() <= F_SCALE * np.sqrt(6 / 6)
    assert np.abs(pep.F).max() > 0.5 * F_SCALE * np.sqrt(6 / 6)


def test_with_f_zero_hidden_updates_vanish_and_output_update_is_the_gradient(xp, backend, rng):
    pep = net(backend)
    pep.F[...] = 0
    x, y = small_batch(xp, rng)
    updates = pep.gradients(x, y)
    for u in updates[:-1]:
        assert float(abs(u["W"]).max()) == 0 and float(abs(u["b"]).max()) == 0
    out = pep.layers[-1]
    errors = check_gradients(lambda: pep.loss_and_gradients(x, y)[0], out.params, updates[-1], tol=KINK_TOL)
    print("output layer, F = 0:", errors)
    bp = BackpropNet(sizes=[6, 7, 5], num_classes=3, seed=3, backend=backend, dtype="float64")
    for layer, bp_layer in zip(pep.layers, bp.layers):
        bp_layer.W[...], bp_layer.b[...] = layer.W, layer.b
    np.testing.assert_allclose(to_numpy(updates[-1]["W"]), to_numpy(bp.gradients(x, y)[-1]["W"]), rtol=1e-12)


def test_hidden_update_is_not_the_gradient(rng):
    """The must-fail case: with its random F, the first layer's update fails the gradient check."""
    pep = net()
    x, y = small_batch(np, rng)
    updates = pep.gradients(x, y)
    assert float(abs(updates[0]["W"]).max()) > 0
    with pytest.raises(GradientCheckError):
        check_gradients(lambda: pep.loss_and_gradients(x, y)[0], {"W": pep.layers[0].W},
                        {"W": updates[0]["W"]}, tol=KINK_TOL)


def test_hand_computed_update():
    """One example, no biases, one hidden layer of 2, 2 classes, plain SGD (momentum 0), lr 1.

        x = [1, 2], y = 0, W1 = [[1, 0], [0, 1]], W2 = 0, F = [[1, 0], [0, 0]] (C, D)
        pass 1: h = relu(x W1) = [1, 2], s = h W2 = [0, 0], p = [0.5, 0.5], e = p - [1, 0] = [-0.5, 0.5]
        x' = x + e F = [1 - 0.5, 2] = [0.5, 2]
        pass 2: h' = [0.5, 2], s' = 0, e' = [-0.5, 0.5]
        dW1 = x'^T (h - h') = [0.5, 2]^T [0.5, 0] = [[0.25, 0], [1, 0]]
        dW2 = h'^T e' = [0.5, 2]^T [-0.5, 0.5] = [[-0.25, 0.25], [-1, 1]]
        W1 <- W1 - dW1 = [[0.75, 0], [-1, 1]],   W2 <- -dW2 = [[0.25, -0.25], [1, -1]]
    """
    pep = PepitaNet(sizes=[2, 2], num_classes=2, bias=False, lr=1.0, momentum=0.0, dtype="float64")
    pep.layers[0].W[...] = np.eye(2)
    pep.layers[1].W[...] = 0
    pep.F[...] = [[1.0, 0.0], [0.0, 0.0]]
    x, y = np.array([[1.0, 2.0]]), np.array([0])
    assert pep.train_step(x, y) == pytest.approx(np.log(2))
    np.testing.assert_allclose(pep.layers[0].W, [[0.75, 0.0], [-1.0, 1.0]], rtol=1e-15)
    np.testing.assert_allclose(pep.layers[1].W, [[0.25, -0.25], [1.0, -1.0]], rtol=1e-15)


def mnist_problem(n=300):
    mnist = load_mnist()
    return mnist.train.x[:n], mnist.train.y[:n]


def test_sign_convention_reduces_the_loss():
    """On 300 MNIST digits (pixels in [0, 1]), 784-32, the paper's SGD 0.1 with momentum 0.9,
    batch 50, 8 epochs: the cross-entropy falls from ~log 10; with every update negated it
    rises. Measured: 2.36 -> 1.14 (PEPITA), 2.36 -> 2.3e3 (negated)."""
    x, y = mnist_problem()

    def trained_loss(sign):
        pep = PepitaNet(sizes=[784, 32], seed=0)
        start = float(pep.loss_and_gradients(x, y)[0])
        for _ in range(8):
            for s in range(0, len(y), 50):
                xb, yb = x[s:s + 50], y[s:s + 50]
                _, updates = pep.loss_and_gradients(xb, yb)
                for layer, opt, u in zip(pep.layers, pep.optimizers, updates):
                    opt.step(layer.params, {k: None if g is None else sign * g for k, g in u.items()})
        return start, float(pep.loss_and_gradients(x, y)[0])

    start, end = trained_loss(+1)
    _, end_wrong = trained_loss(-1)
    print(f"loss {start:.3f} -> {end:.3f}; negated updates -> {end_wrong:.3f}")
    assert end < 0.6 * start and not end_wrong < start


def test_hidden_layer_learns_from_the_modulation(rng):
    """With F = 0 a train step leaves the hidden weights unchanged; with the random F it moves them."""
    x, y = small_batch(np, rng)
    for zero_f in (True, False):
        pep = net()
        if zero_f:
            pep.F[...] = 0
        before = pep.layers[0].W.copy()
        pep.train_step(x, y)
        assert np.array_equal(pep.layers[0].W, before) == zero_f


def test_seed_reproducibility_and_fixed_feedback(rng):
    x, y = small_batch(np, rng)
    a, b, c = net(seed=1), net(seed=1), net(seed=2)
    F0 = a.F.copy()
    for _ in range(3):
        losses = a.train_step(x, y), b.train_step(x, y)
        assert losses[0] == losses[1]
    for la, lb in zip(a.layers, b.layers):
        np.testing.assert_array_equal(la.W, lb.W)
    np.testing.assert_array_equal(a.F, F0)                      # F never learns
    assert not np.array_equal(a.F, c.F)


def test_save_and_load_round_trip(tmp_path, rng):
    pep = net()
    x, y = small_batch(np, rng)
    pep.train_step(x, y)
    save(pep, tmp_path / "model.npz")
    other = net(seed=9)
    load(other, tmp_path / "model.npz")
    np.testing.assert_array_equal(other.F, pep.F)
    np.testing.assert_array_equal(other.scores(x), pep.scores(x))


def test_bad_input():
    pep = net()
    with pytest.raises(ValueError, match="labels must lie"):
        pep.train_step(np.zeros((2, 6)), np.array([0, 3]))
    with pytest.raises(ValueError, match="expected inputs of shape"):
        pep.train_step(np.zeros((2, 5)), np.array([0, 1]))


def test_command_line_run(tmp_path, capsys):
    """``--algo pepita``: 2,000 examples, 784-64, the paper's SGD 0.1 (momentum 0.9), batch 64, pixels
    in [0, 1], 2 epochs; far above chance (measured 68.3% on 1,000 test images)."""
    args = ["--algo", "pepita", "--hidden", "64", "--optimizer", "sgd", "--lr", "0.1", "--batch-size", "64",
            "--no-normalize", "--train-subset", "2000", "--test-subset", "1000", "--epochs", "2", "--no-progress",
            "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "PEPITA on MNIST" in out
    record = json.loads((tmp_path / "metrics.json").read_text())[-1]
    print(record)
    assert isinstance(record["train_loss"], float) and record["test_acc"] > 0.5
    with np.load(tmp_path / "model.npz") as saved:
        assert "feedback.0" in saved.files
    with pytest.raises(SystemExit):
        main(["--algo", "pepita", "--arch", "cnn"])
    assert "no convolutional network" in capsys.readouterr().err
