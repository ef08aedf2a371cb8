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
