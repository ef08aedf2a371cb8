"""DeeperForward's channel-group read-out (minimf/rules/deeper_forward.py) in Mono-Forward's conv blocks.

Gradients in float64 against finite differences on tiny images (as tests/test_cnn.py): the
read-out's backward (DF-2) alone, and the whole block's local gradients with the layer norm in
front; must-fail cases: a backward without the 1/(K H' W') factor, and a gradient computed as if the
layer norm were absent. The seeds keep every pre-activation more than 1e-4 from the ReLU kink
(asserted).
"""
import json
from functools import partial

import numpy as np
import pytest
from fake_data import random_images

from minimf import MonoForwardCNN
from minimf.backend import to_numpy
from minimf.checkpoint import load, save
from minimf.nn.cnn import conv_block_backward, conv_block_forward
from minimf.rules.deeper_forward import ChannelGroupReadout, range_scores
from minimf.nn.gradcheck import KINK_TOL, GradientCheckError, check_gradient, check_gradients, numerical_grad
from minimf.nn.im2col import conv2d_forward
from minimf.nn.losses import softmax_cross_entropy
from minimf.nn.norm import layer_norm
from minimf.train import main

SHAPE, CHANNELS, CLASSES = (1, 8, 8), (6, 9), 3
MARGIN = 1e-4


def df_net(seed=0, backend="numpy", bias=True, lr=1e-3):
    return MonoForwardCNN(input_shape=SHAPE, channels=CHANNELS, num_classes=CLASSES, backend=backend, seed=seed,
                          bias=bias, lr=lr, dtype="float64", readout="channel-group")


images = partial(random_images, shape=SHAPE, classes=CLASSES)   # images(xp, n=3, seed=0) -> x, y


def assert_away_from_kinks(net, x):
    for i, layer in enumerate(net.layers, start=1):
        z = conv2d_forward(layer_norm(x), layer.W, layer.b, 1, 1)[0]
        assert float(abs(z).min()) > MARGIN, f"block {i}: a pre-activation is within {MARGIN} of 0; choose other seeds"
        x = layer.forward(x)


def test_goodness_is_the_mean_of_each_channel_group(xp):
    readout = ChannelGroupReadout((6, 2, 2), 3)
    a = xp.arange(2 * 6 * 2 * 2, dtype="float64").reshape(2, 6, 2, 2)
    G = readout.goodness(a)
    assert G.shape == (2, 3)
    # example 0, class 1 = channels 2 and 3 = numbers 8..15, mean 11.5
    assert float(G[0, 1]) == 11.5
    assert float(G[1, 0]) == float(a[1, :2].mean())
    assert readout.params == {}


def test_readout_backward_matches_finite_differences(rng):
    readout = ChannelGroupReadout((6, 2, 2), 3)
    a = rng.standard_normal((4, 6, 2, 2))
    y = rng.integers(0, 3, 4)
    loss = lambda: softmax_cross_entropy(readout.goodness(a), y)[0]   # noqa: E731
    dG = softmax_cross_entropy(readout.goodness(a), y)[1]
    da, grads = readout.backward(dG, a)
    assert grads == {} and da.shape == a.shape
    numeric = numerical_grad(loss, a)
    print("da", check_gradient("da", da, numeric))
    with pytest.raises(GradientCheckError):                  # must fail: the mean's 1/(K H' W') forgotten
        check_gradient("da", da * (2 * 2 * 2), numeric)


def test_block_local_gradients_with_layer_norm(rng):
    net = df_net()
    x, y = images(np)
    assert_away_from_kinks(net, x)
    inputs = net.layer_inputs(x)
    for i, (layer, layer_input) in enumerate(zip(net.layers, inputs)):
        _, _, grads = layer.local_gradients(layer_input, y)
        assert set(grads) == {"W", "b"}

        def local_loss():
            return softmax_cross_entropy(layer.goodness(layer.forward(layer_input)), y)[0]

        print(f"block {i + 1}", check_gradients(local_loss, {"W": layer.W, "b": layer.b}, grads, tol=KINK_TOL))


def test_gradient_without_the_layer_norm_is_rejected():
    """Must fail: the block's W-gradient computed on the raw input (forgetting DF-3) does not match
    the finite differences of the loss that the block actually has."""
    net = df_net()
    x, y = images(np)
    layer = net.layers[1]
    layer_input = net.layer_inputs(x)[1]
    a, cache = conv_block_forward(layer_input, layer.W, layer.b, "avg")      # no layer norm
    dG = softmax_cross_entropy(layer.readout.goodness(a), y)[1]
    da, _ = layer.readout.backward(dG, a)
    _, dW_raw, _ = conv_block_backward(da, cache, input_grad=False)

    def local_loss():
        return softmax_cross_entropy(layer.goodness(layer.forward(layer_input)), y)[0]

    with pytest.raises(GradientCheckError):
        check_gradients(local_loss, {"W": layer.W}, {"W": dW_raw}, tol=KINK_TOL)


def test_layer_norm_gives_mean_zero_variance_one_per_example(xp):
    x = xp.asarray(np.random.default_rng(0).standard_normal((3, 2, 4, 4)) * 5 + 7)
    xn = layer_norm(x)
    np.testing.assert_allclose(to_numpy(xn.mean(axis=(1, 2, 3))), 0, atol=1e-12)
    np.testing.assert_allclose(to_numpy(xn.var(axis=(1, 2, 3))), 1, atol=1e-5)


def test_channels_must_divide_into_class_groups():
    with pytest.raises(ValueError, match="cannot be split into 3 equal groups"):
        MonoForwardCNN(input_shape=SHAPE, channels=(6, 8), num_classes=3, readout="channel-group")
    with pytest.raises(ValueError, match="unknown readout"):
        MonoForwardCNN(input_shape=SHAPE, channels=(6,), num_classes=3, readout="groups")


def test_no_readout_parameters_and_range_scores(rng):
    net = df_net()
    x, y = images(np)
    weights = sum(l.W.size + l.b.size for l in net.layers)
    assert net.num_parameters("ff") == net.num_parameters("bp") == weights
    goodness = net.goodness(x)
    np.testing.assert_allclose(range_scores(goodness), net.scores(x, "ff"))
    np.testing.assert_allclose(range_scores(goodness, 1), goodness[1])
    with pytest.raises(ValueError, match="no layers"):
        range_scores(goodness, 2)


def test_training_reduces_the_local_losses_and_is_seeded(tmp_path, rng):
    x, y = images(np, n=12, seed=1)
    nets = [df_net(seed=2, lr=1e-2) for _ in range(2)]
    histories = [[net.train_step(x, y) for _ in range(60)] for net in nets]
    assert histories[0] == histories[1]
    first, last = histories[0][0], histories[0][-1]
    print("losses", first, "->", last)
    # measured (60 Adam steps at 1e-2 on 12 random images with random labels): block 1 1.095 -> 1.014,
    # block 2 1.100 -> 0.228. A first block's channel means over the whole map (a texture statistic
    # of a 3x3 filter) can barely tell noise images apart; the second block, on 4x4 maps of
    # layer-normalised features, fits them.
    assert last[0] < first[0] and last[1] < 0.5 * first[1]
    save(nets[0], tmp_path / "model.npz")
    other = df_net(seed=5)
    load(other, tmp_path / "model.npz")
    np.testing.assert_array_equal(other.scores(x, "ff"), nets[0].scores(x, "ff"))


def test_command_line_readout(tmp_path, capsys):
    """``--readout channel-group`` reaches the network and is recorded; channels not divisible by the
    classes are refused. (Learning itself: the loss tests above and the README's MNIST run; mean
    goodness starts slowly, and 8 steps on 200 images stay near chance.)"""
    args = ["--arch", "cnn", "--channels", "10", "20", "--readout", "channel-group", "--train-subset", "200",
            "--test-subset", "200", "--epochs", "1", "--lr", "5e-3", "--no-progress", "--out", str(tmp_path)]
    assert main(args) == 0
    capsys.readouterr()
    record = json.loads((tmp_path / "metrics.json").read_text())[-1]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["settings"]["readout"] == "channel-group" and config["num_parameters"] == 10 * 9 + 10 + 200 * 9 + 20
    assert len(record["layer_test_acc"]) == 2 and len(record["train_loss"]) == 2
    load(MonoForwardCNN(channels=(10, 20), readout="channel-group"), tmp_path / "model.npz")
    for bad, message in ((["--channels", "10", "15"], "divisible by 10, got [15]"),
                         (["--algo", "bp", "--channels", "10"], "is for --algo mf --arch cnn")):
        with pytest.raises(SystemExit):
            main(["--arch", "cnn", "--readout", "channel-group", *bad])
        assert message in capsys.readouterr().err
