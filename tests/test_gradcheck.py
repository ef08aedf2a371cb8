"""The gradient checker itself: it must measure correctly, and it must fail loudly."""
import numpy as np
import pytest

from minimf.nn.gradcheck import GradientCheckError, check_gradient, numerical_grad, rel_error


def test_numerical_grad_of_a_known_function(xp):
    x = xp.asarray([[1.0, -2.0], [0.5, 3.0]])
    grad = numerical_grad(lambda: (x ** 3).sum(), x)          # d/dx sum x^3 = 3 x^2
    np.testing.assert_allclose(grad.tolist(), (3 * x ** 2).tolist(), rtol=1e-9)
    assert x.tolist() == [[1.0, -2.0], [0.5, 3.0]]               # restored after perturbing


def test_numerical_grad_refuses_float32(xp):
    x = xp.ones(3, dtype="float32")
    with pytest.raises(ValueError, match="float64"):
        numerical_grad(lambda: x.sum(), x)


def test_numerical_grad_refuses_non_contiguous(xp):
    x = xp.ones((3, 4)).T
    with pytest.raises(ValueError, match="contiguous"):
        numerical_grad(lambda: x.sum(), x)


def test_rel_error_values():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    # largest difference 0.5 against the largest |a| + |b| = 2 + 2.5
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.5])) == pytest.approx(0.5 / 4.5)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros(2), np.zeros(3))


def test_check_gradient_message_names_tensor_index_and_values():
    numeric = np.array([[0.1, 0.2], [0.3, 0.4]])
    analytic = numeric.copy()
    analytic[1, 0] = 0.9
    with pytest.raises(GradientCheckError) as info:
        check_gradient("dW", analytic, numeric)
    message = str(info.value)
    assert "dW" in message and "(1, 0)" in message and "0.9" in message and "0.3" in message


def test_check_gradient_passes_and_returns_error():
    a = np.array([1.0, 2.0])
    assert check_gradient("g", a, a + 1e-12) < 1e-11


def test_check_gradient_rejects_nan_and_wrong_shape():
    with pytest.raises(GradientCheckError):
        check_gradient("g", np.array([np.nan, 1.0]), np.array([1.0, 1.0]))
    with pytest.raises(GradientCheckError, match="shape"):
        check_gradient("g", np.zeros((2, 3)), np.zeros((3, 2)))


def _mf_layer_case(seed=22):
    """One MF layer of lesson 4's task 4.1 (ReLU, projection M): in this batch some units are active
    for every example and some for none."""
    from minimf.backend import make_rng
    from minimf.rules.mono_forward import MonoForwardLayer
    layer = MonoForwardLayer(5, 6, 3, make_rng(2), np, dtype="float64")
    rng = np.random.default_rng(seed)
    return layer, rng.standard_normal((4, 5)), rng.integers(0, 3, size=4)


def _mf_gradients(x, W, b, M, y, slip=None):
    from minimf.nn.losses import softmax_cross_entropy
    z = x @ W + b
    a = np.maximum(z, 0)
    loss, dG = softmax_cross_entropy(a @ M.T, y)
    dz = dG @ M if slip == "no mask" else (dG @ M) * (z > 0)
    grads = {"W": x.T @ dz, "b": dz.sum(axis=0), "M": dG.T @ a}
    if slip == "sum":
        grads = {name: len(x) * g for name, g in grads.items()}
    if slip == "transpose":
        grads["W"] = dz.T @ x
    return loss, grads


@pytest.mark.parametrize("slip,failing,hint", [
    ("no mask", "W, b: wrong (M", "a mask is missing"),
    ("sum", "W, b, M: wrong", "mine is 4 times the reference"),
    ("transpose", "W: wrong (b", "its transpose"),
])
def test_check_gradients_reports_every_failing_tensor_and_the_slip(slip, failing, hint):
    from minimf.nn.gradcheck import KINK_TOL, check_gradients
    layer, x, y = _mf_layer_case()
    params = {"W": layer.W, "b": layer.b, "M": layer.M}
    grads = _mf_gradients(x, layer.W, layer.b, layer.M, y, slip)[1]
    with pytest.raises(GradientCheckError) as info:
        check_gradients(lambda: _mf_gradients(x, layer.W, layer.b, layer.M, y)[0], params, grads, tol=KINK_TOL)
    message = str(info.value)
    print(message)
    assert message.startswith(failing) and hint in message
    assert "mine" in message and ("reference" in message or "expected" in message)
    assert len(message.splitlines()) <= 2 + 4 * len(params)       # short: no page of internals
    assert "gradcheck.py" not in message and "Traceback" not in message
    assert info.value._render_traceback_() == [f"GradientCheckError: {message}"]   # a notebook shows only this


def test_check_gradients_passes_the_right_gradients_of_that_layer():
    from minimf.nn.gradcheck import KINK_TOL, check_gradients
    layer, x, y = _mf_layer_case()
    params = {"W": layer.W, "b": layer.b, "M": layer.M}
    errors = check_gradients(lambda: _mf_gradients(x, layer.W, layer.b, layer.M, y)[0], params,
                             _mf_gradients(x, layer.W, layer.b, layer.M, y)[1], tol=KINK_TOL)
    assert set(errors) == {"W", "b", "M"} and max(errors.values()) < KINK_TOL


def test_check_gradients_names_a_missing_or_none_gradient():
    from minimf.nn.gradcheck import check_gradients
    x = np.array([1.0, 2.0])
    y = np.array([0.5, -1.0])
    with pytest.raises(GradientCheckError) as info:
        check_gradients(lambda: (x * y).sum(), {"x": x, "y": y}, {"x": None})
    assert "x: mine is None" in str(info.value) and "y: mine has no gradient for y" in str(info.value)


def test_slip_hints():
    from minimf.nn.gradcheck import slip_hint
    rng = np.random.default_rng(0)
    n = rng.standard_normal((3, 3))
    assert "8 times" in slip_hint(8 * n, n) and "divided by 8" in slip_hint(n / 8, n)
    assert "minus" in slip_hint(-n, n) and "transpose" in slip_hint(n.T, n)
    assert slip_hint(rng.standard_normal((3, 3)), n) is None             # no slip recognised: no hint


def test_check_layer_names_a_wrong_number_of_gradients():
    from minimf.nn.gradcheck import check_layer
    from minimf.nn.layers import dense_forward
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((2, 3)), "W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)}
    with pytest.raises(GradientCheckError, match="returned 2 gradient"):
        check_layer(dense_forward, lambda dz, cache: (dz @ cache[1].T, cache[0].T @ dz), inputs)
