"""NumPy against CuPy on the same host arrays: losses, gradients and a training step agree.

Marked ``gpu``: skipped where CuPy or a CUDA device is missing."""
import numpy as np
import pytest

from minimf import BackpropCNN, BackpropNet, MonoForwardCNN, MonoForwardNet
from minimf.backend import to_numpy

pytestmark = pytest.mark.gpu


def batch(dtype, n=32, d=20, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, classes, n)


def assert_same_gradients(grads_numpy, grads_cupy, names, rtol):
    """Per-layer gradient dicts from the two backends agree on every named array."""
    for g_np, g_cp in zip(grads_numpy, grads_cupy):
        for name in names:
            np.testing.assert_allclose(to_numpy(g_cp[name]), g_np[name], rtol=rtol, atol=rtol * 1e-2)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-6), ("float32", 1e-4)])
def test_mono_forward_parity(dtype, rtol):
    x, y = batch(dtype)
    nets = [MonoForwardNet(sizes=[20, 16, 12], num_classes=5, backend=b, seed=1, dtype=dtype)
            for b in ("numpy", "cupy")]
    assert_same_gradients(*[net.local_gradients(x, y) for net in nets], "WbM", rtol)
    losses = [net.train_step(x, y) for net in nets]
    np.testing.assert_allclose(losses[1], losses[0], rtol=rtol)
    for layer_np, layer_cp in zip(nets[0].layers, nets[1].layers):
        np.testing.assert_allclose(to_numpy(layer_cp.W), layer_np.W, rtol=rtol, atol=rtol * 1e-2)
    if dtype == "float64":  # float32 rounding may flip a near-tie between two classes
        np.testing.assert_array_equal(to_numpy(nets[1].predict(x, "ff")), nets[0].predict(x, "ff"))


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-6), ("float32", 1e-4)])
def test_backprop_parity(dtype, rtol):
    x, y = batch(dtype)
    nets = [BackpropNet(sizes=[20, 16, 12], num_classes=5, backend=b, seed=1, dtype=dtype)
            for b in ("numpy", "cupy")]
    assert_same_gradients(*[net.gradients(x, y) for net in nets], "Wb", rtol)
    np.testing.assert_allclose(nets[1].train_step(x, y), nets[0].train_step(x, y), rtol=rtol)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-6), ("float32", 1e-4)])
@pytest.mark.parametrize("pool", ["avg", "max"])
def test_cnn_parity(dtype, rtol, pool):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 2, 12, 12)).astype(dtype), rng.integers(0, 5, 8)
    kwargs = dict(input_shape=(2, 12, 12), channels=(4, 6), num_classes=5, seed=1, dtype=dtype, pool=pool)
    for kind, names in ((MonoForwardCNN, "WbM"), (BackpropCNN, "Wb")):
        nets = [kind(backend=b, **kwargs) for b in ("numpy", "cupy")]
        grads = [net.local_gradients(x, y) if kind is MonoForwardCNN else net.gradients(x, y) for net in nets]
        assert_same_gradients(*grads, names, rtol)
        np.testing.assert_allclose(nets[1].train_step(x, y), nets[0].train_step(x, y), rtol=rtol)


def test_cupy_wraps_bad_labels_so_they_are_checked():
    net = MonoForwardNet(sizes=[20, 8], num_classes=5, backend="cupy")
    x, _ = batch("float32")
    with pytest.raises(ValueError, match="labels must lie"):
        net.train_step(x, np.full(32, 7))
