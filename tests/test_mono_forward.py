"""Mono-Forward: each layer's local gradients (eqs. 5-8) against finite differences of that layer's
own loss, locality (nothing flows between layers), the training step, prediction and bad input."""
import numpy as np
import pytest

from minimf import MonoForwardNet
from minimf.checkpoint import load, save
from minimf.nn.gradcheck import KINK_TOL, GradientCheckError, check_gradients, numerical_grad
from minimf.nn.losses import softmax_cross_entropy
from minimf.nn.optim import Adam


def small_net(backend="numpy", bias=True, seed=3):
    """A float64 net 6 -> 7 -> 5 -> 4 with 3 classes, for gradient checks."""
    return MonoForwardNet(sizes=[6, 7, 5, 4], num_classes=3, backend=backend, seed=seed,
                          bias=bias, dtype="float64")


def small_batch(xp, rng, n=5):
    return xp.asarray(rng.standard_normal((n, 6))), xp.asarray(rng.integers(0, 3, n))


def local_loss(layer, x, y):
    """L_i for layer i, recomputed from scratch: cross-entropy of softmax(relu(x W + b) M^T)."""
    z = x @ layer.W + (layer.b if layer.b is not None else 0)
    a = z * (z > 0)
    return softmax_cross_entropy(a @ layer.M.T, y)[0]


@pytest.mark.parametrize("bias", [True, False])
def test_local_gradients_of_every_layer(backend, xp, rng, bias):
    net = small_net(backend, bias)
    x, y = small_batch(xp, rng)
    grads = net.local_gradients(x, y)
    assert len(grads) == 3
    for i, (layer, layer_x) in enumerate(zip(net.layers, net.layer_inputs(x))):
        params = {k: v for k, v in layer.params.items() if v is not None}
        errors = check_gradients(lambda: local_loss(layer, layer_x, y), params, grads[i], tol=KINK_TOL)
        print(f"layer {i + 1}", errors)
        assert set(errors) == ({"W", "b", "M"} if bias else {"W", "M"})
        assert grads[i]["W"].shape == layer.W.shape and grads[i]["M"].shape == layer.M.shape


@pytest.mark.parametrize("wrong", ["M_doubled", "M_transposed_product", "W_without_relu_mask",
                                   "W_of_both_losses"])
def test_local_gradient_check_rejects_wrong_gradients(backend, xp, rng, wrong):
    net = small_net(backend)
    x, y = small_batch(xp, rng)
    layer = net.layers[0]
    grads = dict(net.local_gradients(x, y)[0])
    if wrong == "M_doubled":
        grads["M"] = 2 * grads["M"]
    elif wrong == "M_transposed_product":     # a^T dG reshaped to (C, H): right numbers, wrong places
        a = layer.forward(x)
        _, dG = softmax_cross_entropy(a @ layer.M.T, y)
        grads["M"] = (a.T @ dG).reshape(layer.M.shape)
    elif wrong == "W_without_relu_mask":      # forgetting relu' lets the error through dead units
        z = x @ layer.W + layer.b
        G = (z * (z > 0)) @ layer.M.T
        _, dG = softmax_cross_entropy(G, y)
        grads["W"] = x.T @ (dG @ layer.M)
    else:                                     # backprop's gradient: of L_1 + L_2, through layer 2
        both = lambda: local_loss(layer, x, y) + local_loss(net.layers[1], layer.forward(x), y)
        grads["W"] = numerical_grad(both, layer.W)
    with pytest.raises(GradientCheckError):
        check_gradients(lambda: local_loss(layer, x, y), {"W": layer.W, "M": layer.M},
                        {"W": grads["W"], "M": grads["M"]}, tol=KINK_TOL)


def test_gradient_stops_at_the_layer_input(rng):
    """Layer 1's MF gradient is that of L_1 alone: the loss of layer 2 does depend on W_1, yet
    nothing of it reaches W_1 (no backward pass across layers)."""
    net = small_net()
    x, y = small_batch(np, rng)
    l1, l2 = net.layers[:2]
    g1 = net.local_gradients(x, y)[0]["W"]
    both = lambda: local_loss(l1, x, y) + local_loss(l2, l1.forward(x), y)
    through_both = numerical_grad(both, l1.W)
    assert np.abs(through_both - g1).max() > 1e-3 * np.abs(g1).max()   # L_2 does depend on W_1 ...
    changed = small_net()
    changed.layers[1].W[...] = rng.standard_normal(changed.layers[1].W.shape)
    changed.layers[2].M[...] = rng.standard_normal(changed.layers[2].M.shape)
    np.testing.assert_array_equal(changed.local_gradients(x, y)[0]["W"], g1)   # ... but not g_1


def test_local_gradients_agree_with_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    net = small_net()
    x, y = small_batch(np, rng)
    ours = net.local_gradients(x, y)
    h = torch.tensor(x)
    for layer, g in zip(net.layers, ours):
        W, b, M = (torch.tensor(layer.params[k], requires_grad=True) for k in "WbM")
        a = torch.relu(h @ W + b)
        loss = torch.nn.functional.cross_entropy(a @ M.T, torch.tensor(y))
        loss.backward()
        for name, t in zip("WbM", (W, b, M)):
            np.testing.assert_allclose(g[name], t.grad.numpy(), rtol=1e-10, atol=1e-14)
        h = a.detach()                       # the next layer gets a plain array


def test_train_step_uses_one_forward_pass(rng):
    """train_step == local_gradients on the un-updated network, then Adam on every layer."""
    net, reference = small_net(), small_net()
    x, y = small_batch(np, rng)
    grads = reference.local_gradients(x, y)
    for layer, g in zip(reference.layers, grads):
        Adam(lr=1e-3).step(layer.params, g)
    losses = net.train_step(x, y)
    assert len(losses) == 3 and all(isinstance(v, float) for v in losses)
    for ours, theirs in zip(net.layers, reference.layers):
        for name in "WbM":
            np.testing.assert_allclose(ours.params[name], theirs.params[name], rtol=1e-12)


def test_losses_fall_on_a_fixed_batch(rng):
    net = MonoForwardNet(sizes=[6, 16, 16], num_classes=3, seed=0, lr=1e-2)
    x, y = small_batch(np, rng, n=32)
    first = net.train_step(x, y)
    for _ in range(100):
        last = net.train_step(x, y)
    assert all(l < 0.5 * f for f, l in zip(first, last)), (first, last)


def test_same_seed_same_numbers_other_seed_other_numbers(rng):
    x, y = small_batch(np, rng, n=16)
    runs = []
    for seed in (7, 7, 8):
        net = small_net(seed=seed)
        runs.append([net.train_step(x, y) for _ in range(3)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_prediction_modes(rng):
    net = small_net()
    x, y = small_batch(np, rng, n=20)
    G = net.goodness(x)
    assert [g.shape for g in G] == [(20, 3)] * 3
    np.testing.assert_array_equal(net.predict(x, mode="bp"), G[-1].argmax(axis=1))
    np.testing.assert_array_equal(net.predict(x, mode="ff"), (G[0] + G[1] + G[2]).argmax(axis=1))
    result = net.evaluate(x, y, batch_size=7)
    assert result["bp"] == pytest.approx(np.mean(G[-1].argmax(axis=1) == y))
    assert result["ff"] == pytest.approx(np.mean(sum(G).argmax(axis=1) == y))
    assert result["layers"] == pytest.approx([np.mean(g.argmax(axis=1) == y) for g in G])
    with pytest.raises(ValueError, match="prediction mode"):
        net.predict(x, mode="sum")


def test_parameter_counts_match_the_paper_without_biases():
    """The paper's Table 4: BP 1,794k and MF in FF mode 1,804k parameters for 784-1000-1000."""
    net = MonoForwardNet(sizes=[784, 1000, 1000], bias=False)
    assert net.num_parameters("ff") == 784 * 1000 + 1000 * 1000 + 2 * 10 * 1000 == 1_804_000
    assert net.num_parameters("bp") == 1_794_000
    assert MonoForwardNet(sizes=[784, 1000, 1000]).num_parameters("ff") == 1_806_000


@pytest.mark.parametrize("x, y, message", [
    (np.zeros((4, 5)), np.zeros(4, dtype=int), r"shape \(N, 6\)"),
    (np.zeros((4, 6), dtype=np.uint8), np.zeros(4, dtype=int), "floating-point"),
    (np.full((4, 6), np.nan), np.zeros(4, dtype=int), "NaN"),
    (np.full((4, 6), np.inf), np.zeros(4, dtype=int), "NaN or infinite"),
    (np.zeros((4, 6)), np.array([0, 1, 2, 3]), r"labels must lie in \[0, 2\]"),
    (np.zeros((4, 6)), np.array([0, -1, 2, 1]), r"labels must lie in \[0, 2\]"),
    (np.zeros((4, 6)), np.zeros(3, dtype=int), "expected 4 integer labels"),
    (np.zeros((4, 6)), np.zeros(4), "integer class labels"),
    (np.zeros((0, 6)), np.zeros(0, dtype=int), "empty batch"),
])
def test_bad_input_is_a_clear_value_error(x, y, message):
    net = small_net()
    for call in (net.train_step, net.local_gradients):
        with pytest.raises(ValueError, match=message):
            call(x, y)


def test_bad_sizes():
    with pytest.raises(ValueError, match="at least one hidden"):
        MonoForwardNet(sizes=[784])
    with pytest.raises(ValueError, match="positive"):
        MonoForwardNet(sizes=[784, 0])


def test_float64_inputs_are_cast_to_the_network_dtype(rng):
    net = MonoForwardNet(sizes=[6, 8], num_classes=3)
    G = net.goodness(rng.standard_normal((2, 6)))
    assert G[0].dtype == np.float32


def test_save_and_load_round_trip(tmp_path, rng):
    net = small_net()
    x, y = small_batch(np, rng)
    net.train_step(x, y)
    save(net, tmp_path / "model.npz")
    other = small_net(seed=99)
    load(other, tmp_path / "model.npz")
    np.testing.assert_array_equal(other.predict(x, "ff"), net.predict(x, "ff"))
    for a, b in zip(net.layers, other.layers):
        np.testing.assert_array_equal(a.M, b.M)
    with pytest.raises(ValueError, match="shape"):
        load(MonoForwardNet(sizes=[6, 9, 5, 4], num_classes=3), tmp_path / "model.npz")
