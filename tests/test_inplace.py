"""The fast paths of issue 9 compute what the readable forms compute, and really work in place.

- Adam's in-place step against the textbook formula (m_hat, v_hat written out), and no array of a
  parameter's size allocated per step once the state exists (tracemalloc);
- ReLU with ``out=``: same values as the functional form, written into the given array;
- average pooling by strided-slice additions (minimf/nn/cnn.py) against minimf/nn/conv.py's window mean,
  and its gradient check with avg_pool_backward; its backward by assignment (non-overlapping
  windows) against avg_pool_backward, stale memory in the result ruled out;
- a Mono-Forward step's peak memory does not grow with depth.
"""
import tracemalloc

import numpy as np
import pytest

from minimf import MonoForwardNet
from minimf.nn.cnn import avg_pool_backward_by_offsets, avg_pool_by_offsets
from minimf.nn.conv import avg_pool_backward, avg_pool_forward
from minimf.nn.gradcheck import check_layer
from minimf.nn.layers import relu_backward, relu_forward
from minimf.nn.optim import Adam

KINK_TOL = 1e-6


def textbook_adam(p, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """Adam on a float64 array exactly as the docstring's textbook form, new arrays everywhere."""
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def test_inplace_adam_equals_the_textbook_form(rng):
    p0 = rng.standard_normal((7, 5))
    grads = [rng.standard_normal((7, 5)) * 10.0 ** rng.integers(-6, 2) for _ in range(30)]
    params = {"W": p0.copy()}
    opt = Adam(lr=3e-3)
    for g in grads:
        opt.step(params, {"W": g})
    np.testing.assert_allclose(params["W"], textbook_adam(p0, grads, 3e-3), rtol=1e-12, atol=1e-15)


def test_the_comparison_would_catch_eps_inside_the_root(rng):
    """Must fail: the same comparison rejects Adam with eps moved inside the square root."""
    p0, grads = rng.standard_normal(6), [rng.standard_normal(6) * 1e-7 for _ in range(5)]
    params = {"w": p0.copy()}
    opt = Adam(lr=1e-3, eps=1e-8)
    for g in grads:
        opt.step(params, {"w": g})
    wrong = textbook_adam(p0, grads, 1e-3, eps=0.0)   # = eps inside the root with eps**2 ~ 0
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(params["w"], wrong, rtol=1e-12, atol=1e-15)


def test_adam_allocates_nothing_of_a_parameters_size_per_step(rng):
    W = rng.standard_normal((500, 200)).astype(np.float32)      # 400 kB
    g = rng.standard_normal((500, 200)).astype(np.float32)
    params, opt = {"W": W}, Adam()
    opt.step(params, {"W": g})                                   # makes m, v and the scratch array
    state = [id(opt.m["W"]), id(opt.v["W"]), id(opt.scratch["W"])]
    tracemalloc.start()
    opt.step(params, {"W": g})
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < W.nbytes / 10, f"Adam.step allocated {peak} bytes for a {W.nbytes}-byte parameter"
    assert params["W"] is W and [id(opt.m["W"]), id(opt.v["W"]), id(opt.scratch["W"])] == state


def test_relu_out_writes_into_the_given_array(rng):
    z = rng.standard_normal((4, 6))
    expected_a = np.maximum(z, 0)
    a, cache = relu_forward(z.copy())
    np.testing.assert_array_equal(a, expected_a)
    z_in = z.copy()
    a_inplace, _ = relu_forward(z_in, out=z_in)
    assert a_inplace is z_in
    np.testing.assert_array_equal(a_inplace, expected_a)
    da = rng.standard_normal((4, 6))
    dz = relu_backward(da, cache)
    assert not np.shares_memory(dz, da)
    np.testing.assert_array_equal(dz, da * (z > 0))
    da_in = da.copy()
    assert relu_backward(da_in, cache, out=da_in) is da_in
    np.testing.assert_array_equal(da_in, da * (z > 0))


@pytest.mark.parametrize("shape, size, stride", [((2, 3, 8, 8), 2, 2), ((2, 3, 7, 7), 2, 2),
                                                 ((1, 2, 9, 7), 3, 2), ((3, 1, 5, 6), 2, 1)])
def test_avg_pool_by_offsets_equals_the_window_mean(rng, shape, size, stride):
    x = rng.standard_normal(shape)
    out, cache = avg_pool_by_offsets(x, size, stride)
    expected, expected_cache = avg_pool_forward(x, size, stride)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-15)
    assert cache == expected_cache
    errors = check_layer(lambda x: avg_pool_by_offsets(x, size, stride), avg_pool_backward, {"x": x}, tol=KINK_TOL)
    print("avg_pool_by_offsets", errors)


def test_avg_pool_by_offsets_is_not_a_copy_of_an_input_slice(rng):
    """Must fail if the pooling forgot the other offsets: compare with x[::2, ::2] alone."""
    x = rng.standard_normal((1, 1, 4, 4))
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(avg_pool_by_offsets(x)[0], x[:, :, ::2, ::2])


@pytest.mark.parametrize("shape, size, stride", [((2, 3, 8, 8), 2, 2), ((2, 3, 7, 7), 2, 2), ((1, 2, 9, 7), 3, 2),
                                                 ((3, 1, 5, 6), 2, 1), ((2, 2, 9, 10), 2, 3)])
def test_avg_pool_backward_by_offsets_equals_the_readable_backward(rng, shape, size, stride):
    """Covers tiled windows, odd maps (an uncovered last row and column), overlapping windows
    (the fallback) and gaps between windows (stride > size)."""
    x = rng.standard_normal(shape)
    out, cache = avg_pool_forward(x, size, stride)
    dout = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(avg_pool_backward_by_offsets(dout, cache), avg_pool_backward(dout, cache))
    errors = check_layer(lambda x: avg_pool_by_offsets(x, size, stride), avg_pool_backward_by_offsets, {"x": x},
                         tol=KINK_TOL)
    print("avg_pool_backward_by_offsets", errors)


def test_avg_pool_backward_by_offsets_zeroes_what_no_window_covers(rng):
    """dx starts as uninitialised memory: must fail if the uncovered pixels kept stale numbers.
    A freed array full of NaN is likely to be handed back for the next one of the same size."""
    cache = ((1, 1, 7, 7), 2, 2)
    for _ in range(5):
        np.full((1, 1, 7, 7), np.nan)
        dx = avg_pool_backward_by_offsets(np.ones((1, 1, 3, 3)), cache)
        assert np.isfinite(dx).all() and (dx[0, 0, 6] == 0).all() and (dx[0, 0, :, 6] == 0).all()
    with pytest.raises(AssertionError):  # the check sees stale numbers where they are
        dx[0, 0, 6, 6] = np.nan
        assert np.isfinite(dx).all()


def test_conv_block_gradients_flow_without_layout_copies(rng):
    """The convolution's output z is a transposed view of its (F, N, H, W) product; the pooling's
    backward writes dr in that layout, so the convolution's backward reads it as (F, N*H*W) with
    no copy. Numbers as with the plain C-ordered dx."""
    from minimf.nn.cnn import conv_block_forward, POOL
    from minimf.nn.conv import init_conv
    x = rng.standard_normal((3, 2, 6, 6))
    W, b = init_conv(rng, 2, 4, 3, np, dtype="float64")
    a, cache = conv_block_forward(x, W, b)
    z = cache[1]
    assert not z.flags.c_contiguous and z.transpose(1, 0, 2, 3).flags.c_contiguous
    da = rng.standard_normal(a.shape)
    dr = avg_pool_backward_by_offsets(da, cache[2], like=z)
    assert dr.strides == z.strides and np.shares_memory(dr.transpose(1, 0, 2, 3).reshape(4, -1), dr)
    np.testing.assert_array_equal(dr, avg_pool_backward(da, ((3, 4, 6, 6), POOL, POOL)))


def step_peak(depth, width=200, batch=64):
    """Peak bytes allocated during one MF train_step (after a warm-up step) of ``depth`` layers."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 50)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    net = MonoForwardNet(sizes=[50] + [width] * depth, seed=0)
    net.train_step(x, y)
    tracemalloc.start()
    net.train_step(x, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_mono_forward_step_memory_does_not_grow_with_depth():
    """MF holds one layer's activations and gradients at a time: 2, 4 and 8 layers of 200 units
    peak within one 200x200 weight gradient of each other (BP would add a layer's gradient and
    cache per layer)."""
    peaks = [step_peak(depth) for depth in (2, 4, 8)]
    one_gradient = 200 * 200 * 4
    print("MF step peaks (bytes) at depths 2, 4, 8:", peaks)
    assert max(peaks) - min(peaks) < one_gradient
