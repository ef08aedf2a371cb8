"""SGD and Adam against values worked out independently of minimf's code."""
import math

import numpy as np
import pytest

from minimf.optim import SGD, Adam, make_optimizer


def scalar_adam(p, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam for one number, written from the paper's Algorithm 1 with plain floats."""
    m = v = 0.0
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr * (m / (1 - beta1 ** t)) / (math.sqrt(v / (1 - beta2 ** t)) + eps)
    return p


def run_adam(xp, p0, grads, lr):
    params = {"w": xp.asarray([p0])}
    opt = Adam(lr=lr)
    for g in grads:
        opt.step(params, {"w": xp.asarray([g])})
    return float(params["w"][0]), opt


def test_adam_first_step_moves_by_lr_whatever_the_gradient_size(xp):
    # t=1: m_hat = g and v_hat = g^2, so the step is lr * g / (|g| + eps), about lr * sign(g).
    for g in (1e-3, 1.0, 250.0, -7.0):
        p, _ = run_adam(xp, 0.0, [g], lr=0.01)
        assert p == pytest.approx(-0.01 * g / (abs(g) + 1e-8), rel=1e-12)
        assert p == pytest.approx(-0.01 * math.copysign(1, g), rel=1e-4)


def test_adam_two_steps_by_hand(xp):
    # g = 1 then -2, lr 0.01, from 0:
    # t=1: m=0.1, v=0.001, m_hat=1, v_hat=1 -> p = -0.01 / (1 + eps)
    # t=2: m=-0.11, v=0.004999, m_hat=-0.11/0.19, v_hat=0.004999/0.001999
    expected = -0.01 / (1 + 1e-8) - 0.01 * (-0.11 / 0.19) / (math.sqrt(0.004999 / 0.001999) + 1e-8)
    p, opt = run_adam(xp, 0.0, [1.0, -2.0], lr=0.01)
    assert p == pytest.approx(expected, rel=1e-9)
    assert opt.t == 2


def test_adam_matches_scalar_reference_over_many_steps(xp, rng):
    grads = rng.standard_normal(50).tolist()
    p, _ = run_adam(xp, 0.5, grads, lr=0.003)
    assert p == pytest.approx(scalar_adam(0.5, grads, lr=0.003), rel=1e-12)


def test_adam_eps_is_outside_the_square_root(xp):
    # With g = 1e-10 the first step is lr * g / (g + eps) ~ lr / 101. Inside the root it would be
    # lr * g / sqrt(g^2 + eps) ~ lr * 1e-6.
    p, _ = run_adam(xp, 0.0, [1e-10], lr=1.0)
    assert p == pytest.approx(-1e-10 / (1e-10 + 1e-8), rel=1e-9)


def test_adam_updates_in_place_and_skips_none(xp):
    W = xp.ones(3)
    params = {"W": W, "b": None}
    Adam(lr=0.1).step(params, {"W": xp.ones(3), "b": None})
    assert params["W"] is W and W.tolist() == pytest.approx([0.9] * 3)


def test_adam_matches_torch(xp, rng):
    torch = pytest.importorskip("torch")
    w0 = rng.standard_normal(4)
    grads = rng.standard_normal((20, 4))
    params = {"w": xp.asarray(w0.copy())}
    opt = Adam(lr=0.01)
    tw = torch.tensor(w0.copy(), requires_grad=True)
    topt = torch.optim.Adam([tw], lr=0.01)
    for g in grads:
        opt.step(params, {"w": xp.asarray(g)})
        tw.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(params["w"].tolist(), tw.detach().numpy(), rtol=1e-10)


def test_sgd_plain_and_momentum_by_hand(xp):
    params = {"w": xp.asarray([1.0])}
    SGD(lr=0.5).step(params, {"w": xp.asarray([0.4])})
    assert float(params["w"][0]) == pytest.approx(0.8)
    params = {"w": xp.asarray([0.0])}
    opt = SGD(lr=0.1, momentum=0.9)
    for g in (1.0, 1.0):
        opt.step(params, {"w": xp.asarray([g])})
    # v1 = 1, p = -0.1; v2 = 0.9 + 1 = 1.9, p = -0.1 - 0.19
    assert float(params["w"][0]) == pytest.approx(-0.29)


@pytest.mark.parametrize("bad", [dict(lr=0), dict(lr=-1), dict(beta1=1.0), dict(beta2=-0.1)])
def test_adam_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        Adam(**bad)


def test_make_optimizer():
    assert isinstance(make_optimizer("adam", 1e-3), Adam)
    assert isinstance(make_optimizer("sgd", 1e-3), SGD)
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("rmsprop", 1e-3)
