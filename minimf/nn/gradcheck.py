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

A failed check says what a learner needs to find the slip, in a few lines (``GradientCheckError``):
every failing tensor (``check_gradients`` checks all of them before it raises, and names those that
passed), its relative error, its worst entries as mine (the analytic gradient) against the
reference (the numerical one), and a hint when the difference has the shape of a common slip
(``slip_hint``): a constant factor (the batch size N, a 2, a sign), a transposed product, a missing
mask (ReLU's 1[z > 0]: mine agrees where every unit was active and is non-zero where the reference is 0).
"""
import numpy as np

from minimf.backend import get_array_module, make_rng, to_numpy

SMOOTH_TOL = 1e-7
KINK_TOL = 1e-6


class GradientCheckError(AssertionError):
    """An analytic gradient disagrees with the numerical one.

    The message names every failing tensor with its relative error, its worst entries (mine, the
    analytic gradient, against the reference, the numerical one) and a hint where the difference
    looks like a common slip. In a notebook (IPython) only that message is shown, without the
    checker's own frames."""

    def _render_traceback_(self):
        return [f"{type(self).__name__}: {self}"]


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
    """Raise ``GradientCheckError`` naming the tensor, its worst entries (mine against the
    reference) and a hint if ``rel_error(analytic, numeric) > tol``; otherwise return the relative error."""
    result = compare(name, analytic, numeric, tol)
    if not result.passed:
        raise GradientCheckError(result.message())
    return result.error


def check_gradients(f, params, analytic, tol=SMOOTH_TOL, h=1e-5):
    """Check ``analytic[name]`` against the numerical gradient of scalar ``f()`` for every
    array ``params[name]`` (float64, perturbed in place). Returns {name: relative error}.

    Every tensor is checked before anything is raised, so one ``GradientCheckError`` reports all
    failing tensors at once (and says which passed: where a slip sits shows in which do)."""
    results = [compare(name, analytic[name] if name in analytic else _MISSING, numerical_grad(f, params[name], h),
                       tol) for name in params]
    failed = [result for result in results if not result.passed]
    if failed:
        passed = [result for result in results if result.passed]
        lines = [f"{', '.join(r.name for r in failed)}: wrong"
                 + (f" ({', '.join(f'{r.name} {r.error:.1e}' for r in passed)} right)" if passed else "")]
        hints = {r.hint for r in failed}
        shared = len(failed) > 1 and len(hints) == 1 and None not in hints
        lines += [r.message(indent="  ", hint=not shared) for r in failed]
        if shared:
            lines.append(f"  hint, for all of them: {hints.pop()}")
        extra = sorted(set(analytic) - set(params)) if hasattr(analytic, "keys") else []
        if extra:
            lines.append(f"  (mine also has {', '.join(map(str, extra))}, which nothing checks)")
        raise GradientCheckError("\n".join(lines))
    return {result.name: result.error for result in results}


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
    if not isinstance(grads, (tuple, list)):
        grads = (grads,)
    if len(grads) != len(inputs):
        raise GradientCheckError(f"the backward returned {len(grads)} gradient(s) for {len(inputs)} input(s) "
                                 f"({', '.join(inputs)}): one gradient per input, in that order")

    def scalar():
        return (forward(*arrays)[0] * dout).sum()

    analytic = dict(zip(inputs, grads))
    return check_gradients(scalar, inputs, analytic, tol, h)


_MISSING = object()
SHOWN = 3            # entries shown per failing tensor


class Comparison:
    """One tensor's check: ``passed``, ``error`` (the relative error), the lines that explain a failure
    and a ``hint`` naming the slip it looks like (or None)."""

    def __init__(self, name, passed, error, lines, hint=None):
        self.name, self.passed, self.error, self.lines, self.hint = name, passed, error, lines, hint

    def message(self, indent="", hint=True):
        lines = self.lines + ([f"  hint: {self.hint}"] if hint and self.hint else [])
        return "\n".join(indent + line for line in lines)


def compare(name, analytic, numeric, tol=SMOOTH_TOL):
    """Compare mine (``analytic``) with the reference (``numeric``) for one tensor; never raises."""
    n = to_numpy(numeric)
    if analytic is _MISSING:
        return Comparison(name, False, float("inf"), [f"{name}: mine has no gradient for {name}"])
    if analytic is None:
        return Comparison(name, False, float("inf"), [f"{name}: mine is None, expected shape {n.shape}"])
    try:
        a = np.asarray(to_numpy(analytic), dtype=float)
    except (TypeError, ValueError):
        return Comparison(name, False, float("inf"),
                          [f"{name}: mine is a {type(analytic).__name__}, not an array of numbers"])
    if a.shape != n.shape:
        line = f"{name}: mine has shape {a.shape}, expected {n.shape}"
        if a.ndim == 2 and a.shape == n.shape[::-1]:
            line += " (its transpose: swap the factors of the product, or add .T)"
        elif a.size == n.size:
            line += " (the same number of entries: reshape, or the order of the axes)"
        return Comparison(name, False, float("inf"), [line])
    errors = _scaled_differences(a, n)
    error = float(errors.max()) if errors.size else 0.0
    if error <= tol:  # also fails for NaN
        return Comparison(name, True, error, [])
    lines = [f"{name}: relative error {error:.3e} > {tol:.0e}" if np.isfinite(error)
             else f"{name}: mine has {int((~np.isfinite(a)).sum())} NaN or infinite entries"]
    flat_errors = np.nan_to_num(errors, nan=np.inf).reshape(-1)
    worst = [i for i in np.argsort(flat_errors)[::-1][:SHOWN] if not flat_errors[i] <= tol]
    for flat in worst:
        index = tuple(int(i) for i in np.unravel_index(flat, a.shape))
        lines.append(f"  at index {index}: mine {a.flat[flat]:.10g}, reference {n.flat[flat]:.10g}")
    return Comparison(name, False, error, lines, slip_hint(a, n, tol))


def slip_hint(a, n, tol=SMOOTH_TOL):
    """A sentence naming the common slip that ``a`` (mine) against ``n`` (the reference, the same
    shape) looks like, or None: a constant factor (N, 2, a sign), a transpose, a missing mask."""
    if not (np.all(np.isfinite(a)) and a.size):
        return None
    scale = max(1e-8, float((np.abs(a) + np.abs(n)).max()))
    nn = float((n * n).sum())
    if nn > 0:
        ratio = float((a * n).sum()) / nn
        if ratio != 0 and float(np.abs(a - ratio * n).max()) <= 10 * tol * scale and abs(ratio - 1) > 1e-3:
            return _factor_hint(ratio)
    if a.ndim == 2 and a.shape[0] == a.shape[1] and float(np.abs(a.T - n).max()) <= 10 * tol * scale:
        return "mine is the transpose of the reference: swap the factors of the product (or add .T)"
    close = np.abs(a - n) <= 10 * tol * scale
    reference_zero = np.abs(n) <= 10 * tol * scale
    if (close & ~reference_zero).any() and (~close & reference_zero).any():
        return ("mine agrees with the reference in some entries and is non-zero where the reference is 0: "
                "a mask is missing (ReLU's 1[z > 0], or max pooling's winner)")
    return None


def _factor_hint(ratio):
    for k in range(2, 1025):
        if abs(ratio - k) <= 1e-6 * k:
            return (f"mine is {k} times the reference: a sum where the loss takes a mean (is {k} the batch "
                    f"size N?), or a factor {k} from a derivative")
        if abs(1 / ratio - k) <= 1e-6 * k:
            return f"mine is the reference divided by {k}: a division by {k} (the batch size N?) too many"
    if abs(ratio + 1) <= 1e-6:
        return "mine is minus the reference: a sign is flipped"
    return f"mine is {ratio:.6g} times the reference everywhere: a constant factor is off"


def _scaled_differences(a, b):
    """|a_i - b_i| / max(1e-8, max_i (|a_i| + |b_i|)) for every entry i, on host arrays."""
    scale = (np.abs(a) + np.abs(b)).max() if a.size else 0.0
    return np.abs(a - b) / max(1e-8, float(scale))


def _require_float64(x, name):
    if str(x.dtype) != "float64":
        raise ValueError(f"gradient checks need float64 arrays; {name} is {x.dtype}")
