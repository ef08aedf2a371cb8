"""SGD and Adam against values worked out independently of minimf's code, and their fused CuPy path
(one kernel per parameter) against the NumPy reference."""
import math
import types

import numpy as np
import pytest

from minimf.nn import optim
from minimf.backend import get_backend, gpu_available, to_numpy
from minimf.nn.optim import SGD, Adam, make_optimizer


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


# --- The fused CuPy path (one kernel per parameter) against the NumPy reference -------------------
# On CuPy, update() runs fused_update: SGD, SGD with momentum and Adam as ONE cupy.fuse kernel per
# parameter; on NumPy, reference_update, the readable in-place sequence. Launch counts need the
# strict stand-in (it counts kernel launches; real CuPy does not), so those tests are skipped on a GPU.

STAND_IN_ONLY = pytest.mark.skipif(gpu_available(), reason="only the strict CuPy stand-in counts kernel launches")

OPTIMIZERS = {"adam": lambda: Adam(lr=0.01), "momentum": lambda: SGD(lr=0.1, momentum=0.9),
              "sgd": lambda: SGD(lr=0.1)}
REFERENCE_PASSES = {"adam": 12, "momentum": 4, "sgd": 2}     # element-wise operations of reference_update
TOL = {np.float64: 1e-12, np.float32: 1e-5}                  # relative to each array's largest value


def state(opt, name):
    """The optimiser's state arrays of parameter ``name``: Adam's m and v, SGD's velocity (or none)."""
    if isinstance(opt, Adam):
        return {"m": opt.m[name], "v": opt.v[name]}
    return {"velocity": opt.velocity[name]} if opt.momentum else {}


def device_layer(xp, rng, dtype=np.float64):
    """A layer's params and grads on ``xp``: W (6, 4) and b (4,), drawn on the host."""
    params = {"W": xp.asarray(rng.standard_normal((6, 4)).astype(dtype)),
              "b": xp.asarray(rng.standard_normal(4).astype(dtype))}
    grads = {"W": xp.asarray(rng.standard_normal((6, 4)).astype(dtype)),
             "b": xp.asarray(rng.standard_normal(4).astype(dtype))}
    return params, grads


@STAND_IN_ONLY
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_a_cupy_step_launches_one_kernel_per_parameter(rng, kind):
    xp = get_backend("cupy")
    params, grads = device_layer(xp, rng)
    opt = OPTIMIZERS[kind]()
    opt.step(params, grads)                      # the first step makes the state (zeros kernels)
    launches, syncs = xp.kernel_launches(), xp.host_syncs()
    opt.step(params, grads)
    print(kind, "launches per step:", xp.kernel_launches() - launches, "for", len(params), "parameters")
    assert xp.kernel_launches() - launches == len(params)
    assert xp.host_syncs() == syncs              # the scalars go in as numbers: nothing read back


@STAND_IN_ONLY
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_the_launch_count_would_catch_the_unfused_path(rng, kind):
    """Must fail: the reference path on the same device arrays launches a kernel per operation."""
    xp = get_backend("cupy")
    params, grads = device_layer(xp, rng)
    opt = OPTIMIZERS[kind]()
    opt.step(params, grads)
    p, g = params["W"], grads["W"]
    arrays = [p, g, *state(opt, "W").values()] + ([xp.empty_like(g)] if kind == "adam" else [])
    launches = xp.kernel_launches()
    opt.reference_update(*arrays)
    unfused = xp.kernel_launches() - launches
    print(kind, "reference_update launches:", unfused)
    assert unfused == REFERENCE_PASSES[kind] > 1


@pytest.mark.parametrize("halves", [False, True], ids=["whole", "part-halves"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_fused_path_equals_the_numpy_reference(rng, kind, dtype, halves):
    """10 steps with gradients of changing size: p and the state on "cupy" against NumPy."""
    xp = get_backend("cupy")
    p0 = rng.standard_normal((7, 5)).astype(dtype)
    grads = [(rng.standard_normal((7, 5)) * 10.0 ** rng.integers(-4, 2)).astype(dtype) for _ in range(10)]
    host, device = {"W": p0.copy()}, {"W": xp.asarray(p0)}
    host_opt, device_opt = OPTIMIZERS[kind](), OPTIMIZERS[kind]()
    for g in grads:
        host_opt.step(host, {"W": g})
        g_device = xp.asarray(g)
        if halves:                                   # as update_in_parallel shares a step out
            device_opt.start_step({"W": g_device})
            for part in (slice(0, 17), slice(17, 35)):
                device_opt.update("W", device["W"], g_device, part)
        else:
            device_opt.step(device, {"W": g_device})
    expected = {"p": host["W"], **state(host_opt, "W")}
    actual = {"p": device["W"], **state(device_opt, "W")}
    for key, want in expected.items():
        got = to_numpy(actual[key])
        assert got.dtype == dtype, f"{key} is {got.dtype}, not {np.dtype(dtype)}"
        print(kind, np.dtype(dtype), key, "max |fused - reference| =", np.abs(got - want).max())
        np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * np.abs(want).max(),
                                   err_msg=f"{kind} {key}: fused (actual) against the NumPy reference (desired)")


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_fused_kernels_get_scalars_of_the_parameters_dtype(monkeypatch, rng, kind):
    """float32 stays float32: every scalar reaches the kernel as a number of p's dtype."""
    xp = get_backend("cupy")
    calls = []

    def record(*args):
        calls.append(args)
    monkeypatch.setattr(optim, "fused_kernels", lambda xp: types.SimpleNamespace(adam=record, sgd=record,
                                                                                 momentum=record))
    params, grads = device_layer(xp, rng, np.float32)
    OPTIMIZERS[kind]().step(params, grads)
    assert len(calls) == len(params)
    for args in calls:
        scalars = [a for a in args if not hasattr(a, "shape") or a.shape == ()]
        assert scalars and all(type(a) is np.float32 for a in scalars), [type(a) for a in scalars]


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_numpy_keeps_the_reference_path(monkeypatch, rng, kind):
    """On NumPy nothing is fused: the update is reference_update's, and no kernel is ever asked for."""
    def refuse(xp):
        raise AssertionError("fused_kernels called on NumPy")
    monkeypatch.setattr(optim, "fused_kernels", refuse)
    p0, g = rng.standard_normal(5), rng.standard_normal(5)
    params, opt, twin = {"w": p0.copy()}, OPTIMIZERS[kind](), OPTIMIZERS[kind]()
    opt.step(params, {"w": g})
    twin.start_step({"w": g})
    p = p0.copy()
    arrays = [p, g, *state(twin, "w").values()] + ([twin.scratch["w"]] if kind == "adam" else [])
    twin.reference_update(*arrays)
    np.testing.assert_array_equal(params["w"], p)


def test_fused_kernels_are_made_once_and_adam_on_cupy_needs_no_scratch(rng):
    xp = get_backend("cupy")
    assert optim.fused_kernels(xp) is optim.fused_kernels(xp)
    params, grads = device_layer(xp, rng)
    opt = Adam()
    opt.step(params, grads)
    assert opt.scratch == {} and set(opt.m) == set(opt.v) == {"W", "b"}


def test_cache_pieces_cover_the_part_in_order():
    a = np.zeros((300, 400), dtype=np.float32)                 # 120,000 numbers
    pieces = optim.cache_pieces(None, (a,), piece=50_000)
    assert pieces == [slice(0, 50_000), slice(50_000, 100_000), slice(100_000, 120_000)]
    assert optim.cache_pieces(slice(10, 60_010), (a,), piece=50_000) == [slice(10, 50_010), slice(50_010, 60_010)]
    assert optim.cache_pieces(None, (a[:10],), piece=50_000) == [None]          # small: as it is
    assert optim.cache_pieces(None, (a, a.T), piece=50_000) == [None]          # a.T: not C-contiguous


CACHE_PIECES = optim.cache_pieces


def pieces_of(size, drop_last=False):
    """cache_pieces with pieces of ``size`` numbers (and, for the must-fail case, the last one lost)."""
    def pieces(part, arrays):
        cut = CACHE_PIECES(part, arrays, piece=size)
        return cut[:-1] if drop_last else cut
    return pieces


def stepped_by_pieces(kind, p, grads):
    """p after ``step`` with each gradient of ``grads`` in turn (NumPy: piece by piece)."""
    opt = {"adam": Adam(lr=0.01), "sgd": SGD(lr=0.1), "momentum": SGD(lr=0.1, momentum=0.9)}[kind]
    params = {"W": p.copy()}
    for g in grads:
        opt.step(params, {"W": g})
    return params["W"]


@pytest.mark.parametrize("kind", ["adam", "sgd", "momentum"])
def test_numpy_updates_piece_by_piece_as_one_whole_pass(rng, kind, monkeypatch):
    """A parameter of 3.5 pieces, stepped piece by piece, equals the same steps taken in one
    piece, bit for bit; and a piece left out is caught."""
    p = rng.standard_normal((35, 100)).astype(np.float32)
    grads = [rng.standard_normal(p.shape).astype(np.float32) for _ in range(3)]
    whole = stepped_by_pieces(kind, p, grads)                   # 3,500 numbers < CACHE_PIECE: one piece
    monkeypatch.setattr(optim, "cache_pieces", pieces_of(1000))
    assert np.array_equal(stepped_by_pieces(kind, p, grads), whole)
    monkeypatch.setattr(optim, "cache_pieces", pieces_of(1000, drop_last=True))
    assert not np.array_equal(stepped_by_pieces(kind, p, grads), whole)
