"""The backprop baseline: gradients of the whole network against finite differences."""
import numpy as np
import pytest

from minimf import BackpropNet
from minimf.nn.gradcheck import KINK_TOL, GradientCheckError, check_gradients


def small_net(backend="numpy", bias=True, seed=5):
    return BackpropNet(sizes=[6, 7, 5], num_classes=3, backend=backend, seed=seed, bias=bias,
                       dtype="float64")


def small_batch(xp, rng, n=5):
    return xp.asarray(rng.standard_normal((n, 6))), xp.asarray(rng.integers(0, 3, n))


@pytest.mark.parametrize("bias", [True, False])
def test_gradients_of_every_layer(backend, xp, rng, bias):
    net = small_net(backend, bias)
    x, y = small_batch(xp, rng)
    grads = net.gradients(x, y)
    assert len(grads) == len(net.layers) == 3
    loss = lambda: net.loss_and_gradients(x, y)[0]
    for i, layer in enumerate(net.layers):
        params = {k: v for k, v in layer.params.items() if v is not None}
        print(f"layer {i + 1}", check_gradients(loss, params, grads[i], tol=KINK_TOL))


@pytest.mark.parametrize("layer_index", [0, 1, 2])
def test_check_rejects_a_wrong_layer_gradient(rng, layer_index):
    net = small_net()
    x, y = small_batch(np, rng)
    grads = net.gradients(x, y)
    wrong = dict(grads[layer_index], W=-grads[layer_index]["W"])
    with pytest.raises(GradientCheckError):
        check_gradients(lambda: net.loss_and_gradients(x, y)[0], {"W": net.layers[layer_index].W},
                        {"W": wrong["W"]}, tol=KINK_TOL)


def test_gradients_agree_with_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    net = small_net()
    x, y = small_batch(np, rng)
    ours = net.gradients(x, y)
    tensors = [{k: torch.tensor(v, requires_grad=True) for k, v in l.params.items()} for l in net.layers]
    h = torch.tensor(x)
    for i, t in enumerate(tensors):
        h = h @ t["W"] + t["b"]
        if i < len(tensors) - 1:
            h = torch.relu(h)
    torch.nn.functional.cross_entropy(h, torch.tensor(y)).backward()
    for g, t in zip(ours, tensors):
        for name in ("W", "b"):
            np.testing.assert_allclose(g[name], t[name].grad.numpy(), rtol=1e-10, atol=1e-14)


def test_training_fits_a_fixed_batch(rng):
    net = BackpropNet(sizes=[6, 16], num_classes=3, seed=0, lr=1e-2)
    x, y = small_batch(np, rng, n=32)
    first = net.train_step(x, y)
    for _ in range(200):
        last = net.train_step(x, y)
    assert last < 0.3 * first
    assert net.evaluate(x, y)["acc"] > 0.9


def test_parameter_count_matches_the_paper_without_biases():
    assert BackpropNet(sizes=[784, 1000, 1000], bias=False).num_parameters() == 1_794_000


def test_bad_labels(rng):
    net = small_net()
    x, _ = small_batch(np, rng)
    with pytest.raises(ValueError, match="labels must lie"):
        net.train_step(x, np.array([0, 1, 2, 3, 0]))
