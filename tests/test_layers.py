"""Dense and ReLU layers and softmax cross-entropy: hand-derived gradients against finite
differences in float64, each with a must-fail case showing the check rejects a wrong gradient."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minimf.nn.gradcheck import KINK_TOL, GradientCheckError, check_gradients, check_layer
from minimf.nn.layers import (dense_backward, dense_forward, dense_param_grads, init_dense,
                           relu_backward, relu_forward)
from minimf.nn.losses import log_softmax, softmax, softmax_cross_entropy


def dense_inputs(xp, rng, n=4, d=5, h=3):
    return {"x": xp.asarray(rng.standard_normal((n, d))),
            "W": xp.asarray(rng.standard_normal((d, h))),
            "b": xp.asarray(rng.standard_normal(h))}


def away_from_zero(rng, shape, margin=0.1):
    """Normal values with |v| >= margin, so a finite-difference step never crosses ReLU's kink."""
    v = rng.standard_normal(shape)
    return np.where(np.abs(v) < margin, np.sign(v + 1e-12) * margin, v) + 0.0


def test_dense_forward_values(xp):
    x = xp.asarray([[1.0, 2.0]])
    W = xp.asarray([[1.0, 0.0, -1.0], [0.5, 2.0, 1.0]])
    b = xp.asarray([0.0, 1.0, -1.0])
    z, _ = dense_forward(x, W, b)
    np.testing.assert_allclose(np.asarray(z.tolist()), [[2.0, 5.0, 0.0]])


def test_dense_gradients(xp, rng):
    errors = check_layer(dense_forward, dense_backward, dense_inputs(xp, rng))
    print("dense rel errors", errors)
    assert set(errors) == {"x", "W", "b"}


def test_dense_without_bias(xp, rng):
    inputs = dense_inputs(xp, rng)
    del inputs["b"]
    check_layer(lambda x, W: dense_forward(x, W, None), lambda d, c: dense_backward(d, c)[:2], inputs)


def test_dense_param_grads_match_full_backward(xp, rng):
    inputs = dense_inputs(xp, rng)
    z, cache = dense_forward(*inputs.values())
    dz = xp.asarray(rng.standard_normal(z.shape))
    _, dW, db = dense_backward(dz, cache)
    dW2, db2 = dense_param_grads(dz, inputs["x"])
    np.testing.assert_allclose(dW2.tolist(), dW.tolist())
    np.testing.assert_allclose(db2.tolist(), db.tolist())


@pytest.mark.parametrize("wrong", ["double", "transpose_shape", "sign", "missing_bias_sum"])
def test_dense_check_rejects_wrong_gradient(xp, rng, wrong):
    def bad_backward(dz, cache):
        dx, dW, db = dense_backward(dz, cache)
        if wrong == "double":
            return dx, 2 * dW, db
        if wrong == "transpose_shape":  # right numbers laid out as (H, D) instead of (D, H)
            return dx, dW.T, db
        if wrong == "sign":
            return -dx, dW, db
        return dx, dW, dz[0]            # forgot to sum the bias gradient over the batch
    with pytest.raises(GradientCheckError) as info:
        check_layer(dense_forward, bad_backward, dense_inputs(xp, rng))
    print(info.value)


def test_relu_gradient(xp, rng):
    z = xp.asarray(away_from_zero(rng, (4, 6)))
    errors = check_layer(relu_forward, relu_backward, {"z": z}, tol=KINK_TOL)
    print("relu rel error", errors)


def test_relu_check_rejects_identity_backward(xp, rng):
    z = xp.asarray(away_from_zero(rng, (4, 6)))
    with pytest.raises(GradientCheckError):
        check_layer(relu_forward, lambda da, cache: da, {"z": z}, tol=KINK_TOL)


def test_relu_values(xp):
    a, _ = relu_forward(xp.asarray([-2.0, 0.0, 3.0]))
    assert a.tolist() == [0.0, 0.0, 3.0]
    assert relu_backward(xp.asarray([5.0, 5.0, 5.0]), a).tolist() == [0.0, 0.0, 5.0]


def test_init_dense_shapes_bounds_and_seed():
    W, b = init_dense(np.random.default_rng(0), 16, 4, np)
    assert W.shape == (16, 4) and b.shape == (4,) and W.dtype == np.float32
    assert np.abs(W).max() <= 0.25 and np.abs(b).max() <= 0.25
    W2, _ = init_dense(np.random.default_rng(0), 16, 4, np)
    np.testing.assert_array_equal(W, W2)
    assert init_dense(np.random.default_rng(0), 16, 4, np, bias=False)[1] is None


# -- softmax and cross-entropy ------------------------------------------------------------------

def test_cross_entropy_gradient(xp, rng):
    logits = xp.asarray(rng.standard_normal((5, 4)))
    y = xp.asarray(rng.integers(0, 4, 5))
    loss, dlogits = softmax_cross_entropy(logits, y)
    errors = check_gradients(lambda: softmax_cross_entropy(logits, y)[0], {"logits": logits}, {"logits": dlogits})
    print("softmax-CE rel error", errors)


def test_cross_entropy_check_rejects_gradient_without_mean(xp, rng):
    logits = xp.asarray(rng.standard_normal((5, 4)))
    y = xp.asarray(rng.integers(0, 4, 5))
    _, dlogits = softmax_cross_entropy(logits, y)
    with pytest.raises(GradientCheckError):  # forgetting the 1/N is a classic slip
        check_gradients(lambda: softmax_cross_entropy(logits, y)[0], {"logits": logits},
                        {"logits": dlogits * 5})


def test_cross_entropy_closed_form(xp, rng):
    """dL/ds = (softmax(s) - onehot(y)) / N, against an independent one-hot construction."""
    logits_host = rng.standard_normal((6, 3))
    y_host = rng.integers(0, 3, 6)
    _, dlogits = softmax_cross_entropy(xp.asarray(logits_host), xp.asarray(y_host))
    p = np.exp(logits_host) / np.exp(logits_host).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(dlogits.tolist()), (p - np.eye(3)[y_host]) / 6, rtol=1e-12)


def test_cross_entropy_at_uniform_scores_is_log_c(xp):
    loss, _ = softmax_cross_entropy(xp.zeros((8, 10)), xp.arange(8) % 10)
    assert float(loss) == pytest.approx(np.log(10))


def test_softmax_is_stable_for_huge_scores(xp):
    logits = xp.asarray([[1e3, -1e3, 0.0], [-1e3, -1e3, -1e3]])
    loss, dlogits = softmax_cross_entropy(logits, xp.asarray([1, 2]))
    assert np.isfinite(float(loss)) and bool(xp.isfinite(dlogits).all())
    assert float(loss) == pytest.approx((2e3 + np.log(3)) / 2)
    np.testing.assert_allclose(softmax(logits).tolist(), [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-12)


def test_naive_softmax_overflows_where_log_sum_exp_does_not():
    logits = np.array([[1000.0, 0.0]])
    with np.errstate(over="ignore", invalid="ignore"):
        naive = np.exp(logits) / np.exp(logits).sum()
    assert np.isnan(naive).any()
    assert np.isfinite(log_softmax(logits)).all()


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 6), c=st.integers(2, 7), scale=st.floats(1e-3, 1e3), seed=st.integers(0, 2**31))
def test_softmax_rows_sum_to_one(n, c, scale, seed):
    logits = np.random.default_rng(seed).standard_normal((n, c)) * scale
    p = softmax(logits)
    assert np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    y = np.zeros(n, dtype=np.int64)
    _, d = softmax_cross_entropy(logits, y)
    np.testing.assert_allclose(d.sum(axis=1), 0.0, atol=1e-12)  # each row of softmax - onehot sums to 0
