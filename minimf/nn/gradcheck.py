"""Gradient checks: compare a hand-derived gradient with centred finite differences.

For a scalar function f and one entry x_i of its input,

    df/dx_i  ~  (f(x + h e_i) - f(x - h e_i)) / (2 h)        error O(h^2)

In float64 with h = 1e-5 this agrees with a correct analytic gradient to about 1e-8 relative
error or better; a wrong gradient (a missing factor, a transpose, a sign) is off by O(1).
Float32 has only ~7 significant digits, too few for this, so every check insists on float64.

    rel_error(a, b) = max_i |a_i - b_i| / max(1e-8, max_i (|a_i| + |b_i|))

i.e. the largest difference measured against the largest entry of the tensor. (Dividing entry
by entry instead makes any entry that happens to be near zero fail on the O(h^2) truncation
error of the finite difference alone, about 1e-10, although the gradient is right.)
Smooth functions pass below 1e-7; functions with kinks (ReLU, pooling) below 1e-6, provided
no input sits within h of a kink.
"""
import numpy as np

from minimf.backend import get_array_module, make_rng, to_numpy

SMOOTH_TOL = 1e-7
KINK_TOL = 1e-6


class GradientCheckError(AssertionError):
    """An analytic gradient disagrees with the numerical one."""


def numerical_grad(f, x, h=1e-5):
    """Centred-difference gradient of the scalar ``f()`` with respect to the array ``x``.

    ``f`` takes no arguments and reads ``x`` (which is changed in place, one entry at a time,
    and always restored). x: any shape, float64, C-contiguous. Returns an array shaped like x.
    """
    _require_float64(x, "x")
    if not x.flags.c_contiguous:
        raise ValueError("numerical_grad needs a C-contiguous array so that it can perturb it in place")
    xp = get_array_module(x)
    grad = xp.zeros_like(x)
    flat_x = x.reshape(-1)          # a view of contiguous x: writing to it writes to x
    flat_grad = grad.reshape(-1)
    for i in range(flat_x.size):
        old = float(flat_x[i])
        flat_x[i] = old + h
        f_plus = float(f())
        flat_x[i] = old - h
        f_minus = float(f())
        flat_x[i] = old
        flat_grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def rel_error(a, b):
    """Largest difference between two arrays relative to their largest entries (a Python float)."""
    a, b = to_numpy(a), to_numpy(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return float(_scaled_differences(a, b).max()) if a.size else 0.0


def check_gradient(name, analytic, numeric, tol=SMOOTH_TOL):
    """Raise ``GradientCheckError`` naming the tensor, the worst index and both values if
    ``rel_error(analytic, numeric) > tol``; otherwise return the relative error."""
    a, n = to_numpy(analytic), to_numpy(numeric)
    if a.shape != n.shape:
        raise GradientCheckError(f"{name}: analytic gradient has shape {a.shape}, expected {n.shape}")
    errors = _scaled_differences(a, n)
    worst = errors.argmax() if errors.size else 0
    error = float(errors.flat[worst]) if errors.size else 0.0
    if not error <= tol:  # also catches NaN
        index = tuple(int(i) for i in np.unravel_index(worst, a.shape))
        raise GradientCheckError(
            f"{name}: relative error {error:.3e} > {tol:.0e} at index {index}: "
            f"analytic {a.flat[worst]:.10g}, numeric {n.flat[worst]:.10g}"
        )
    return error


def check_gradients(f, params, analytic, tol=SMOOTH_TOL, h=1e-5):
    """Check ``analytic[name]`` against the numerical gradient of scalar ``f()`` for every
    array ``params[name]`` (float64, perturbed in place). Returns {name: relative error}."""
    return {
        name: check_gradient(name, analytic[name], numerical_grad(f, params[name], h), tol)
        for name in params
    }


def check_layer(forward, backward, inputs, tol=SMOOTH_TOL, seed=0, h=1e-5):
    """Check a functional layer pair against finite differences.

    ``forward(*arrays) -> (out, cache)`` and ``backward(dout, cache)`` returning one gradient
    per input array (a tuple, or a single array for a one-input layer). ``inputs`` is a dict
    {name: float64 array} in the order ``forward`` takes them. A random upstream gradient dout
    turns the layer into the scalar L = sum(out * dout), whose gradients the backward returns.
    Returns {name: relative error}; raises ``GradientCheckError`` on a mismatch.
    """
    arrays = list(inputs.values())
    out, cache = forward(*arrays)
    xp = get_array_module(out)
    rng = make_rng(seed)
    dout = xp.asarray(rng.standard_normal(out.shape))
    grads = backward(dout, cache)
    if not isinstance(grads, tuple):
        grads = (grads,)

    def scalar():
        return (forward(*arrays)[0] * dout).sum()

    analytic = dict(zip(inputs, grads))
    return check_gradients(scalar, inputs, analytic, tol, h)


def _scaled_differences(a, b):
    """|a_i - b_i| / max(1e-8, max_i (|a_i| + |b_i|)) for every entry i, on host arrays."""
    scale = (np.abs(a) + np.abs(b)).max() if a.size else 0.0
    return np.abs(a - b) / max(1e-8, float(scale))


def _require_float64(x, name):
    if str(x.dtype) != "float64":
        raise ValueError(f"gradient checks need float64 arrays; {name} is {x.dtype}")
