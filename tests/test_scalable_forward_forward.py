"""Scalable Forward-Forward (minimf/rules/scalable_forward_forward.py).

Gradients in float64 against finite differences of each block's own loss (SFF-3) on tiny images:
the 1x1 read-out's backward (SFF-4) alone, the residual block (backprop inside it), the one-conv
block, and the cut between blocks (block 2's loss does not depend on block 1's weights through
the update: block 1's update is the gradient of block 1's loss only). Must-fail cases: a read-out
backward without the factor 2 of the square, a block gradient that ignores the shortcut, and block
1's update checked against the gradient of the SUM of the block losses (what full backprop would
follow). The seeds keep every ReLU input more than 1e-4 from 0 (asserted).
"""
import json
from functools import partial

import numpy as np
import pytest
from fake_data import random_images

from minimf.checkpoint import load, save
from minimf.nn.cnn import POOLING
from minimf.nn.gradcheck import KINK_TOL, GradientCheckError, check_gradient, check_gradients, numerical_grad
from minimf.nn.im2col import conv2d_backward, conv2d_forward, conv2d_param_grads
from minimf.nn.layers import relu_backward
from minimf.nn.losses import softmax_cross_entropy
from minimf.nn.norm import layer_norm
from minimf.rules.scalable_forward_forward import (ScalableForwardForwardCNN, class_goodness, class_goodness_backward,
                                             residual_block_backward, residual_block_forward)
from minimf.train import main

SHAPE, CHANNELS, CLASSES = (1, 8, 8), (3, 4), 3
MARGIN = 1e-4


def sff_net(hybrid=True, seed=0, lr=1e-3, backend="numpy"):
    return ScalableForwardForwardCNN(input_shape=SHAPE, channels=CHANNELS, num_classes=CLASSES, backend=backend,
                                     seed=seed, lr=lr, dtype="float64", hybrid=hybrid)


images = partial(random_images, shape=SHAPE, classes=CLASSES)   # images(xp, n=3, seed=0) -> x, y


def assert_away_from_kinks(net, x):
    """Every ReLU input (h's pre-activation and, hybrid, u + h) is more than MARGIN from 0."""
    for i, block in enumerate(net.layers, start=1):
        z = conv2d_forward(layer_norm(x), block.W, block.b, 1, 1)[0]
        closest = float(abs(z).min())
        if block.hybrid:
            h = z * (z > 0)
            u = conv2d_forward(h, block.W2, block.b2, 1, 1)[0] + h
            closest = min(closest, float(abs(u).min()))
        assert closest > MARGIN, f"block {i}: a ReLU input is {closest:.1e} from 0; choose other seeds"
        x = block.forward(x)


def block_loss(block, x, y):
    """L_i (SFF-3) of one block on its input x."""
    return softmax_cross_entropy(block.goodness(block.forward(x)), y)[0]


def test_goodness_is_the_mean_square_of_one_channel_per_class():
    rng = np.random.default_rng(0)
    a, M = rng.standard_normal((2, 4, 3, 3)), rng.standard_normal((3, 4, 1, 1))
    G, _ = class_goodness(a, M)
    s = np.einsum("cf,nfij->ncij", M[:, :, 0, 0], a)
    np.testing.assert_allclose(G, (s ** 2).mean(axis=(2, 3)), rtol=1e-12)
    assert G.shape == (2, 3) and (G >= 0).all()


def test_readout_backward_matches_finite_differences(rng):
    a, M = rng.standard_normal((4, 5, 2, 2)), rng.standard_normal((3, 5, 1, 1))
    y = rng.integers(0, 3, 4)
    G, cache = class_goodness(a, M)
    da, dM = class_goodness_backward(softmax_cross_entropy(G, y)[1], cache)
    loss = lambda: softmax_cross_entropy(class_goodness(a, M)[0], y)[0]   # noqa: E731
    print("da", check_gradient("da", da, numerical_grad(loss, a)), "dM", check_gradient("dM", dM, numerical_grad(loss, M)))
    with pytest.raises(GradientCheckError):                   # must fail: d(s^2) = s ds, the 2 forgotten
        check_gradient("dM", dM / 2, numerical_grad(loss, M))


@pytest.mark.parametrize("hybrid", [True, False])
def test_block_local_gradients_match_finite_differences(hybrid):
    net = sff_net(hybrid)
    x, y = images(np)
    assert_away_from_kinks(net, x)
    for i, (block, block_input) in enumerate(zip(net.layers, net.layer_inputs(x))):
        _, loss, grads = block.local_gradients(block_input, y)
        assert set(grads) == set(block.params)
        assert float(loss) == pytest.approx(float(block_loss(block, block_input, y)))
        params = {k: v for k, v in block.params.items() if v is not None}
        print(f"hybrid={hybrid} block {i + 1}",
              check_gradients(lambda: block_loss(block, block_input, y), params, grads, tol=KINK_TOL))


def test_gradient_that_ignores_the_shortcut_is_rejected():
    """Must fail: drop the shortcut's du from dh (backprop inside the block done wrong)."""
    net = sff_net()
    x, y = images(np)
    block = net.layers[0]
    xn = layer_norm(x)
    a, cache = residual_block_forward(xn, block.W, block.b, block.W2, block.b2)
    G, gcache = class_goodness(a, block.M)
    da, _ = class_goodness_backward(softmax_cross_entropy(G, y)[1], gcache)
    right = residual_block_backward(da, cache)
    conv_cache, relu_cache, conv2_cache, relu2_cache, pool_cache, pool = cache
    du = relu_backward(POOLING[pool][1](da, pool_cache), relu2_cache)
    dh, _, _ = conv2d_backward(du, conv2_cache)                   # no "+ du"
    wrong_dW, _ = conv2d_param_grads(relu_backward(dh, relu_cache), conv_cache)
    loss = lambda: block_loss(block, x, y)                         # noqa: E731
    check_gradients(loss, {"W": block.W}, {"W": right["W"]}, tol=KINK_TOL)
    with pytest.raises(GradientCheckError):
        check_gradients(loss, {"W": block.W}, {"W": wrong_dW}, tol=KINK_TOL)


def test_gradients_are_cut_between_blocks():
    """Block 1's update is the gradient of block 1's loss alone. Full backprop through both blocks
    would follow L_1 + L_2: checking block 1's update against that gradient must fail."""
    net = sff_net()
    x, y = images(np)
    first = net.layers[0]
    grads = net.local_gradients(x, y)[0]

    def both_losses():
        a = first.forward(x)
        return block_loss(first, x, y) + block_loss(net.layers[1], a, y)

    check_gradients(lambda: block_loss(first, x, y), {"W": first.W}, {"W": grads["W"]}, tol=KINK_TOL)
    with pytest.raises(GradientCheckError):
        check_gradients(both_losses, {"W": first.W}, {"W": grads["W"]}, tol=KINK_TOL)


def test_shapes_parameters_and_prediction(xp, backend):
    net = sff_net(backend=backend)
    x, _ = images(xp)
    shapes = [{k: v.shape for k, v in block.params.items()} for block in net.layers]
    assert shapes == [{"W": (3, 1, 3, 3), "b": (3,), "W2": (3, 3, 3, 3), "b2": (3,), "M": (3, 3, 1, 1)},
                      {"W": (4, 3, 3, 3), "b": (4,), "W2": (4, 4, 3, 3), "b2": (4,), "M": (3, 4, 1, 1)}]
    weights = (27 + 3 + 81 + 3) + (108 + 4 + 144 + 4)
    assert net.num_parameters("ff") == weights + 9 + 12 and net.num_parameters("bp") == weights + 12
    assert [G.shape for G in net.goodness(x)] == [(3, 3), (3, 3)]
    assert net.predict(x, "ff").shape == (3,)
    assert set(sff_net(hybrid=False).layers[0].params) == {"W", "b", "M"}


def test_training_reduces_the_losses_and_is_seeded(tmp_path):
    x, y = images(np, n=12, seed=1)
    nets = [sff_net(seed=2, lr=1e-2) for _ in range(2)]
    histories = [[net.train_step(x, y) for _ in range(60)] for net in nets]
    assert histories[0] == histories[1]
    first, last = histories[0][0], histories[0][-1]
    print("losses", first, "->", last)
    assert all(b < 0.7 * a for a, b in zip(first, last))
    save(nets[0], tmp_path / "model.npz")
    other = sff_net(seed=5)
    load(other, tmp_path / "model.npz")
    np.testing.assert_array_equal(other.scores(x, "ff"), nets[0].scores(x, "ff"))


def test_bad_input():
    net = sff_net()
    with pytest.raises(ValueError, match="labels must lie"):
        net.train_step(np.zeros((2, *SHAPE)), np.array([0, 3]))
    with pytest.raises(ValueError, match="expected inputs of shape"):
        net.train_step(np.zeros((2, 8, 8)), np.array([0, 1]))


def test_command_line_run(tmp_path, capsys):
    """``--algo sff --arch cnn`` trains and saves, with per-block losses and accuracies as for MF;
    --arch mlp is refused. (Learning itself: the loss test above and the README's MNIST run.)"""
    args = ["--algo", "sff", "--arch", "cnn", "--channels", "4", "8", "--train-subset", "200", "--test-subset",
            "200", "--epochs", "1", "--lr", "5e-3", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    assert "SFF on MNIST" in capsys.readouterr().out
    record = json.loads((tmp_path / "metrics.json").read_text())[-1]
    assert len(record["train_loss"]) == 2 and len(record["layer_test_acc"]) == 2
    assert "test_acc_ff" in record and np.isfinite(record["train_loss"]).all()
    load(ScalableForwardForwardCNN(channels=(4, 8)), tmp_path / "model.npz")
    with pytest.raises(SystemExit):
        main(["--algo", "sff"])
    assert "no MLP" in capsys.readouterr().err
