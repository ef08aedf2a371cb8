"""The fused GPU paths of a training step, each held to its readable NumPy reference in float64 and
float32, and counted: the softmax cross-entropy (minimf/nn/losses.py), bias + ReLU and the ReLU mask
(minimf/nn/layers.py), the flat parameters (minimf/nn/flat.py) and the optimisers' one-pass step
(``step_flat``, minimf/nn/optim.py). The fused paths run on the strict CuPy stand-in here (NumPy
underneath, so the numbers are comparable), on real CuPy where a GPU is present; tests/test_real_cupy.py
traces the same kernels under the real ``cupy.fuse``."""
import copy
import pickle

import numpy as np
import pytest

from minimf.nn import losses
from minimf.nn.flat import FlatParameters
from minimf.nn.layers import bias_relu, relu_backward
from minimf.nn.optim import SGD, Adam
from minimf.testing import strict_cupy as sc

TOLERANCE = {"float64": 1e-12, "float32": 1e-6}


def launches(work):
    before = sc.kernel_launches()
    result = work()
    return sc.kernel_launches() - before, result


def relative_error(mine, reference):
    return float(np.max(np.abs(mine - reference)) / max(1e-30, np.max(np.abs(reference))))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("scale", [1.0, 1e3])
@pytest.mark.parametrize("num_classes", [2, 10, 32])
def test_the_fused_cross_entropy_is_the_reference_in_two_launches(dtype, scale, num_classes, rng):
    """Logits of +-1e3 too (CONVENTIONS: no overflow): the loss and every gradient to rounding."""
    logits = (rng.standard_normal((37, num_classes)) * scale).astype(dtype)
    y = rng.integers(0, num_classes, 37)
    loss, dlogits = losses.reference_softmax_cross_entropy(logits, y)
    device_logits, device_y = sc.asarray(logits), sc.asarray(y)
    count, (fused_loss, fused_dlogits) = launches(lambda: losses.softmax_cross_entropy(device_logits, device_y))
    assert count == 2                          # the row kernel and the sum
    assert fused_loss.dtype == fused_dlogits.dtype == np.dtype(dtype) and fused_loss.shape == ()
    assert abs(float(fused_loss) - float(loss)) <= TOLERANCE[dtype] * abs(float(loss))
    assert relative_error(fused_dlogits.get(), dlogits) <= TOLERANCE[dtype]
    assert np.isfinite(float(fused_loss))


def test_a_wrong_row_kernel_is_caught(rng, monkeypatch):
    """Must-fail: a kernel that takes the label one class too far is far from the reference."""
    logits, y = rng.standard_normal((8, 10)), rng.integers(0, 10, 8)
    reference = losses.reference_softmax_cross_entropy(logits, y)[1]
    right = losses.fused_softmax_cross_entropy(sc.asarray(logits), sc.asarray(y))[1].get()
    assert relative_error(right, reference) <= 1e-12
    wrong = losses.fused_softmax_cross_entropy(sc.asarray(logits), sc.asarray((y + 1) % 10))[1].get()
    assert relative_error(wrong, reference) > 0.1


def test_many_classes_take_the_reference_path(rng):
    """Above ROW_KERNEL_MAX_CLASSES the kernel would take too many arguments: the whole-array path."""
    C = losses.ROW_KERNEL_MAX_CLASSES + 1
    logits, y = rng.standard_normal((5, C)), rng.integers(0, C, 5)
    device_logits, device_y = sc.asarray(logits), sc.asarray(y)
    count, (loss, _) = launches(lambda: losses.softmax_cross_entropy(device_logits, device_y))
    assert count > 2
    assert float(loss) == pytest.approx(float(losses.reference_softmax_cross_entropy(logits, y)[0]), rel=1e-12)


def test_the_loss_makes_no_host_sync(rng):
    logits, y = sc.asarray(rng.standard_normal((6, 10))), sc.asarray(rng.integers(0, 10, 6))
    syncs = sc.host_syncs()
    losses.softmax_cross_entropy(logits, y)
    assert sc.host_syncs() == syncs


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bias_relu_and_the_mask_are_the_reference_bit_for_bit_in_one_launch(dtype, rng):
    z, b = rng.standard_normal((6, 5)).astype(dtype), rng.standard_normal(5).astype(dtype)
    da = rng.standard_normal((6, 5)).astype(dtype)
    expected_a = np.maximum(z + b, 0)
    device_z, device_b = sc.asarray(z), sc.asarray(b)
    count, a = launches(lambda: bias_relu(device_z, device_b))
    assert count == 1 and np.array_equal(a.get(), expected_a)
    assert np.array_equal(bias_relu(z.copy(), b), expected_a)            # NumPy: the reference lines
    device_da = sc.asarray(da)
    count, dz = launches(lambda: relu_backward(device_da, a))
    assert count == 1 and np.array_equal(dz.get(), da * (expected_a > 0))
    assert np.array_equal(device_da.get(), da)                         # out=None: da untouched
    count, dz = launches(lambda: relu_backward(device_da, a, out=device_da))
    assert count == 1 and dz is device_da and np.array_equal(device_da.get(), da * (expected_a > 0))


def test_a_wrong_mask_is_caught(rng):
    """Must-fail: the mask of z < 0 in place of z > 0 differs from the reference."""
    a, da = np.maximum(rng.standard_normal((4, 3)), 0), rng.standard_normal((4, 3))
    assert not np.array_equal(relu_backward(sc.asarray(da), sc.asarray(a)).get(), da * (a == 0))


def test_flat_parameters_are_views_and_survive_a_copy(rng):
    W, b, M = rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal((2, 4))
    flat = FlatParameters({"W": W, "b": b, "M": M, "c": None}, np)
    assert flat.values.shape == flat.grad.shape == (12 + 4 + 8,) and flat.params["c"] is None
    assert np.array_equal(flat.params["M"], M) and np.array_equal(flat.values[12:16], b)
    flat.params["b"][...] = 7.0                                        # a view: the flat array changes
    assert np.all(flat.values[12:16] == 7.0)
    flat.grads["W"][...] = 1.0
    assert flat.grad[:12].sum() == 12 and flat.grad[12:].sum() == 0
    for clone in (pickle.loads(pickle.dumps(flat)), copy.deepcopy(flat)):
        clone.params["W"][...] = -1.0                                  # the copy's views are its own flat array's
        assert np.all(clone.values[:12] == -1.0) and not np.any(flat.values[:12] == -1.0)
    with pytest.raises(ValueError, match="one dtype"):
        FlatParameters({"W": W, "b": b.astype("float32")}, np)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("make", [lambda: Adam(lr=1e-2), lambda: SGD(lr=0.1, momentum=0.9), lambda: SGD(lr=0.1)],
                         ids=["adam", "momentum", "sgd"])
@pytest.mark.parametrize("xp", [np, sc], ids=["numpy", "stand-in"])
def test_step_flat_is_step_bit_for_bit_in_one_launch(make, dtype, xp, rng):
    """Three steps over a layer's flat arrays equal three steps parameter by parameter, and the
    per-name state (what a checkpoint saves) is the same; on the stand-in one launch a step."""
    arrays = {"W": rng.standard_normal((5, 3)), "b": None, "M": rng.standard_normal((2, 3))}
    grads = [{k: None if a is None else rng.standard_normal(a.shape).astype(dtype) for k, a in arrays.items()}
             for _ in range(3)]
    flat = FlatParameters({k: None if a is None else xp.asarray(a.astype(dtype)) for k, a in arrays.items()}, xp)
    apart = {k: None if a is None else xp.asarray(a.astype(dtype)) for k, a in arrays.items()}
    flat_optimizer, optimizer = make(), make()
    for step, g in enumerate(grads):
        for name, view in flat.grads.items():
            if view is not None:
                view[...] = xp.asarray(g[name])
        count, _ = launches(lambda: flat_optimizer.step_flat(flat))
        optimizer.step(apart, {k: None if v is None else xp.asarray(v) for k, v in g.items()})
        if xp is sc and step > 0:             # the first step also makes the state (memsets)
            assert count == 1
    for name in ("W", "M"):
        assert np.array_equal(np.asarray(sc.asnumpy(flat.params[name]) if xp is sc else flat.params[name]),
                              np.asarray(sc.asnumpy(apart[name]) if xp is sc else apart[name]))
    (scalars, state), (scalars_apart, state_apart) = flat_optimizer.state_dict(), optimizer.state_dict()
    assert scalars == scalars_apart and state.keys() == state_apart.keys()
    assert all(np.array_equal(state[k], state_apart[k]) for k in state)


def test_step_flat_continues_from_a_loaded_state(rng):
    """A state loaded into a fresh optimiser is laid out flat on its first step_flat, and the run
    continues as the uninterrupted one."""
    W = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(4)]
    straight, flat = Adam(lr=1e-2), FlatParameters({"W": W}, np)
    resumed_flat = FlatParameters({"W": W}, np)
    for i, g in enumerate(grads):
        flat.grads["W"][...] = g
        straight.step_flat(flat)
        if i == 1:
            resumed = Adam(lr=1e-2)
            resumed.load_state_dict(*straight.state_dict(), np)
            resumed_flat.params["W"][...] = flat.params["W"]
        if i >= 2:
            resumed_flat.grads["W"][...] = g
            resumed.step_flat(resumed_flat)
    assert np.array_equal(resumed_flat.values, flat.values)
