"""Convolution (loop and im2col), pooling and flatten: hand-derived gradients against finite
differences in float64, each with a must-fail case; im2col against the loop version over a
Hypothesis sweep; the output-size rule as a property; the ValueError cases."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from minimf.backend import to_numpy
from minimf.nn.conv import (avg_pool_backward, avg_pool_forward, conv2d_backward_naive, conv2d_forward_naive,
                         flatten_backward, flatten_forward, max_pool_backward, max_pool_forward, pool_windows)
from minimf.nn.gradcheck import KINK_TOL, GradientCheckError, check_layer
from minimf.nn.im2col import conv2d_backward, conv2d_forward

CONVS = {"naive": (conv2d_forward_naive, conv2d_backward_naive), "im2col": (conv2d_forward, conv2d_backward)}
POOLS = {"avg": (avg_pool_forward, avg_pool_backward), "max": (max_pool_forward, max_pool_backward)}
# (size, stride) on H = W = 7: non-overlapping with a trailing row, overlapping, stride 1, gaps between windows
POOL_CASES = [(2, 2), (3, 2), (2, 1), (3, 3), (2, 3)]
# xp fixtures are stateless (an array module), so sharing one across Hypothesis examples is safe
SWEEP = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def conv_inputs(xp, rng, n=2, c=2, h=5, w=4, f=3, hh=3, ww=2):
    return {"x": xp.asarray(rng.standard_normal((n, c, h, w))),
            "w": xp.asarray(rng.standard_normal((f, c, hh, ww))),
            "b": xp.asarray(rng.standard_normal(f))}


def distinct_values(rng, shape, gap=0.01):
    """All entries different by at least ``gap`` (>> h = 1e-5): no ties in any max-pool window."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) - 10.0) * gap


def assert_close(actual, expected, rtol):
    """Entry-wise, relative to the largest entry of ``expected`` (so near-zero entries do not fail)."""
    actual, expected = to_numpy(actual), to_numpy(expected)
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(1e-30, np.abs(expected).max()))


# -- values -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", CONVS)
def test_conv_forward_by_hand(xp, impl):
    """3x3 image 0..8, a 2x2 kernel [[1, 0], [0, -1]] (x[i, j] - x[i+1, j+1] = -4 everywhere), bias 1."""
    x = xp.arange(9.0).reshape(1, 1, 3, 3)
    w = xp.asarray([[[[1.0, 0.0], [0.0, -1.0]]]])
    out, _ = CONVS[impl][0](x, w, xp.asarray([1.0]))
    assert out.tolist() == [[[[-3.0, -3.0], [-3.0, -3.0]]]]
    # pad 1: xpad is 5x5 with the image in rows/cols 1..3; stride 2: windows start at rows/cols 0 and 2,
    # out[i, j] = xpad[2i, 2j] - xpad[2i+1, 2j+1] = [[0 - 0, 0 - 2], [0 - 6, 4 - 8]]
    out, _ = CONVS[impl][0](x, w, None, stride=2, pad=1)
    assert out.tolist() == [[[[0.0, -2.0], [-6.0, -4.0]]]]


def test_pooling_by_hand(xp):
    x = xp.asarray([[[[1.0, 2.0, 5.0], [3.0, 4.0, 0.0], [9.0, 9.0, 9.0]]]])   # H = W = 3, 2x2 windows
    assert avg_pool_forward(x, 2, 2)[0].tolist() == [[[[2.5]]]]   # floor: last row and column dropped
    assert max_pool_forward(x, 2, 1)[0].tolist() == [[[[4.0, 5.0], [9.0, 9.0]]]]


def test_max_pool_tie_goes_to_first_element(xp):
    x = xp.asarray([[[[7.0, 7.0, 1.0], [7.0, 7.0, 7.0]]]])
    out, cache = max_pool_forward(x, 2, 1)                # windows at columns 0 and 1, ties in both
    dx = max_pool_backward(xp.asarray([[[[1.0, 10.0]]]]), cache)
    assert dx.tolist() == [[[[1.0, 10.0, 0.0], [0.0, 0.0, 0.0]]]]   # row-major first maximum of each window


def test_pool_windows_is_the_reshape_when_size_equals_stride(xp, rng):
    x = xp.asarray(rng.standard_normal((2, 3, 6, 4)))
    blocks = x.reshape(2, 3, 3, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    assert (pool_windows(x, 2, 2) == blocks).all()


def test_trailing_rows_get_zero_gradient(xp, rng):
    """Floor rule: H = 6 with a 3-row kernel and stride 2 uses rows 0..4; H = W = 5 pooled 2x2 uses 0..3."""
    x, w = xp.asarray(rng.standard_normal((1, 2, 6, 6))), xp.asarray(rng.standard_normal((2, 2, 3, 3)))
    for forward, backward in CONVS.values():
        out, cache = forward(x, w, None, stride=2)
        dx = backward(xp.ones_like(out), cache)[0]
        assert out.shape == (1, 2, 2, 2) and not dx[:, :, 5].any() and not dx[:, :, :, 5].any()
        assert dx[:, :, 4, :5].all()          # while row 4 is used (in its first five columns)
    x = xp.asarray(distinct_values(rng, (1, 2, 5, 5)))
    for forward, backward in POOLS.values():
        out, cache = forward(x, 2, 2)
        dx = backward(xp.ones_like(out), cache)
        assert out.shape == (1, 2, 2, 2) and not dx[:, :, 4].any() and not dx[:, :, :, 4].any()


def test_non_contiguous_input(xp, rng):
    """The strided views read x through its own strides, so a transposed view gives the same results."""
    host = rng.standard_normal((5, 6, 3, 2))
    view = xp.asarray(host).transpose(3, 2, 0, 1)             # (2, 3, 5, 6), not C-contiguous
    copy = xp.ascontiguousarray(view)
    w = xp.asarray(rng.standard_normal((4, 3, 2, 3)))
    assert_close(conv2d_forward(view, w, None, stride=2)[0], conv2d_forward(copy, w, None, stride=2)[0], 1e-12)
    for forward, _ in POOLS.values():
        assert_close(forward(view, 3, 1)[0], forward(copy, 3, 1)[0], 1e-12)


def test_against_torch_autograd(rng):
    """An independent oracle where PyTorch is installed (never required)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2)), rng.standard_normal(4)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ref = F.conv2d(xt, wt, bt, stride=2, padding=1)
    dout = rng.standard_normal(tuple(ref.shape))
    ref.backward(torch.tensor(dout))
    for forward, backward in CONVS.values():
        out, cache = forward(x, w, b, stride=2, pad=1)
        assert_close(out, ref.detach().numpy(), 1e-12)
        for mine, t in zip(backward(dout, cache), (xt, wt, bt)):
            assert_close(mine, t.grad.numpy(), 1e-12)
    x = distinct_values(rng, (2, 3, 7, 6))
    for (forward, backward), op in zip(POOLS.values(), (F.avg_pool2d, F.max_pool2d)):
        xt = torch.tensor(x, requires_grad=True)
        ref = op(xt, 3, 2)
        dout = rng.standard_normal(tuple(ref.shape))
        ref.backward(torch.tensor(dout))
        out, cache = forward(x, 3, 2)
        assert_close(out, ref.detach().numpy(), 1e-12)
        assert_close(backward(dout, cache), xt.grad.numpy(), 1e-12)


# -- gradients against finite differences (float64) ----------------------------------------------------

@pytest.mark.parametrize("impl", CONVS)
@pytest.mark.parametrize("stride,pad", [(1, 0), (1, 1), (2, 0), (2, 1)])
def test_conv_gradients(xp, rng, impl, stride, pad):
    forward, backward = CONVS[impl]
    errors = check_layer(lambda x, w, b: forward(x, w, b, stride, pad), backward, conv_inputs(xp, rng))
    print(impl, "conv rel errors", errors)


@pytest.mark.parametrize("impl", CONVS)
def test_conv_without_bias(xp, rng, impl):
    forward, backward = CONVS[impl]
    inputs = conv_inputs(xp, rng)
    del inputs["b"]
    out, cache = forward(*inputs.values(), None)
    assert backward(xp.ones_like(out), cache)[2] is None
    check_layer(lambda x, w: forward(x, w, None, 2, 1), lambda d, c: backward(d, c)[:2], inputs)


@pytest.mark.parametrize("impl", CONVS)
@pytest.mark.parametrize("wrong", ["dw_doubled", "dw_kernel_transposed", "dx_kernel_flipped", "db_mean"])
def test_conv_check_rejects_wrong_gradient(xp, rng, impl, wrong):
    forward, backward = CONVS[impl]

    def bad_backward(dout, cache):
        dx, dw, db = backward(dout, cache)
        if wrong == "dw_doubled":
            return dx, 2 * dw, db
        if wrong == "dw_kernel_transposed":      # HH = WW, so the shape is right and the numbers are not
            return dx, dw.transpose(0, 1, 3, 2), db
        if wrong == "dx_kernel_flipped":         # the convolution-vs-correlation slip
            w = cache[1] if impl == "naive" else cache[2]
            flipped = tuple(w[:, :, ::-1, ::-1] if part is w else part for part in cache)
            return backward(dout, flipped)[0], dw, db
        return dx, dw, db / dout.shape[0]
    inputs = conv_inputs(xp, rng, hh=3, ww=3)
    with pytest.raises(GradientCheckError) as info:
        check_layer(lambda x, w, b: forward(x, w, b, 1, 1), bad_backward, inputs)
    print(info.value)


@pytest.mark.parametrize("size,stride", POOL_CASES)
def test_avg_pool_gradient(xp, rng, size, stride):
    x = xp.asarray(rng.standard_normal((2, 2, 7, 7)))
    errors = check_layer(lambda x: avg_pool_forward(x, size, stride), avg_pool_backward, {"x": x}, tol=KINK_TOL)
    print("avg pool rel error", errors)


@pytest.mark.parametrize("size,stride", POOL_CASES)
def test_max_pool_gradient(xp, rng, size, stride):
    x = xp.asarray(distinct_values(rng, (2, 2, 7, 7)))
    errors = check_layer(lambda x: max_pool_forward(x, size, stride), max_pool_backward, {"x": x}, tol=KINK_TOL)
    print("max pool rel error", errors)


def test_avg_pool_check_rejects_gradient_not_divided_by_window_size(xp, rng):
    x = xp.asarray(rng.standard_normal((2, 2, 6, 6)))
    with pytest.raises(GradientCheckError):
        check_layer(lambda x: avg_pool_forward(x, 2, 2), lambda d, c: avg_pool_backward(d, c) * 4,
                    {"x": x}, tol=KINK_TOL)


def test_max_pool_check_rejects_gradient_sent_to_every_element(xp, rng):
    x = xp.asarray(distinct_values(rng, (2, 2, 6, 6)))

    def to_every_element(dout, cache):   # avg pool's routing without the 1/size^2: wrong for max
        shape, _, size, stride = cache
        return avg_pool_backward(dout, (shape, size, stride)) * size * size
    with pytest.raises(GradientCheckError):
        check_layer(lambda x: max_pool_forward(x, 2, 2), to_every_element, {"x": x}, tol=KINK_TOL)


def test_flatten_gradient_and_wrong_order_rejected(xp, rng):
    x = xp.asarray(rng.standard_normal((2, 3, 4, 4)))
    out, _ = flatten_forward(x)
    assert out.shape == (2, 48) and out[1, 5].item() == x[1, 0, 1, 1].item()
    check_layer(flatten_forward, flatten_backward, {"x": x})
    with pytest.raises(GradientCheckError):   # unflattened as (N, C, W, H): right shape, wrong places
        check_layer(flatten_forward, lambda d, shape: d.reshape(shape).transpose(0, 1, 3, 2), {"x": x})


# -- im2col against the loop version ----------------------------------------------------------------------

@st.composite
def conv_cases(draw):
    """Tiny shapes (the loop version is slow) that always fit: H + 2*pad >= HH."""
    hh, ww, pad = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, hh - 2 * pad), hh + 4))
    w = draw(st.integers(max(1, ww - 2 * pad), ww + 4))
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, bias, seed = draw(st.integers(1, 3)), draw(st.booleans()), draw(st.integers(0, 2**31))
    return (n, c, h, w), (f, c, hh, ww), stride, pad, bias, seed


def check_im2col_matches_naive(xp, case, dtype, rtol):
    x_shape, w_shape, stride, pad, bias, seed = case
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.standard_normal(x_shape).astype(dtype))
    w = xp.asarray(rng.standard_normal(w_shape).astype(dtype))
    b = xp.asarray(rng.standard_normal(w_shape[0]).astype(dtype)) if bias else None
    out, cache = conv2d_forward(x, w, b, stride, pad)
    ref, ref_cache = conv2d_forward_naive(x, w, b, stride, pad)
    assert_close(out, ref, rtol)
    dout = xp.asarray(rng.standard_normal(out.shape).astype(dtype))
    for mine, expected in zip(conv2d_backward(dout, cache), conv2d_backward_naive(dout, ref_cache)):
        if expected is None:
            assert mine is None
        else:
            assert_close(mine, expected, rtol)


@settings(SWEEP, max_examples=100)
@given(case=conv_cases())
def test_im2col_matches_naive_float64(xp, case):
    check_im2col_matches_naive(xp, case, np.float64, 1e-10)


@settings(SWEEP, max_examples=50)
@given(case=conv_cases())
def test_im2col_matches_naive_float32(xp, case):
    check_im2col_matches_naive(xp, case, np.float32, 1e-4)   # assert_close also checks both stay float32


# -- the output-size rule -----------------------------------------------------------------------------------

def window_starts(size, kernel, stride, pad):
    """Count the windows by walking them: starts 0, stride, 2*stride, ... while the window fits."""
    return len(range(0, size + 2 * pad - kernel + 1, stride))


@settings(SWEEP, max_examples=60)
@given(h=st.integers(1, 12), w=st.integers(1, 12), hh=st.integers(1, 6), ww=st.integers(1, 6),
       stride=st.integers(1, 4), pad=st.integers(0, 3))
def test_conv_output_size_rule(xp, h, w, hh, ww, stride, pad):
    x, k = xp.zeros((1, 2, h, w)), xp.zeros((3, 2, hh, ww))
    if h + 2 * pad < hh or w + 2 * pad < ww:
        with pytest.raises(ValueError, match="does not fit"):
            conv2d_forward(x, k, None, stride, pad)
        return
    out, _ = conv2d_forward(x, k, None, stride, pad)
    expected = ((h + 2 * pad - hh) // stride + 1, (w + 2 * pad - ww) // stride + 1)
    assert out.shape == (1, 3) + expected
    assert expected == (window_starts(h, hh, stride, pad), window_starts(w, ww, stride, pad))


@settings(SWEEP, max_examples=60)
@given(h=st.integers(1, 12), w=st.integers(1, 12), size=st.integers(1, 5), stride=st.integers(1, 5),
       kind=st.sampled_from(sorted(POOLS)))
def test_pool_output_size_rule(xp, h, w, size, stride, kind):
    forward, backward = POOLS[kind]
    x = xp.asarray(distinct_values(np.random.default_rng(0), (1, 2, h, w)))
    if h < size or w < size:
        with pytest.raises(ValueError, match="does not fit"):
            forward(x, size, stride)
        return
    out, cache = forward(x, size, stride)
    assert out.shape == (1, 2, (h - size) // stride + 1, (w - size) // stride + 1)
    assert out.shape[2:] == (window_starts(h, size, stride, 0), window_starts(w, size, stride, 0))
    assert backward(xp.ones_like(out), cache).shape == x.shape


@pytest.mark.parametrize("impl", CONVS)
@pytest.mark.parametrize("x_shape,w_shape,b_shape,stride,pad,message", [
    ((1, 2, 5, 5), (3, 2, 3, 3), None, 0, 0, "stride must be a positive integer"),
    ((1, 2, 5, 5), (3, 2, 3, 3), None, -1, 0, "stride must be a positive integer"),
    ((1, 2, 5, 5), (3, 2, 3, 3), None, 1.5, 0, "stride must be a positive integer"),
    ((1, 2, 5, 5), (3, 2, 3, 3), None, 1, -1, "pad must be a non-negative integer"),
    ((1, 2, 5, 5), (3, 4, 3, 3), None, 1, 0, "channel mismatch"),
    ((1, 2, 5, 5), (3, 2, 6, 3), None, 1, 0, "does not fit in H = 5"),
    ((1, 2, 5, 2), (3, 2, 3, 3), None, 1, 0, "does not fit in W = 2"),
    ((1, 2, 5, 5), (3, 2, 3, 3), (2,), 1, 0, "bias must have shape"),
    ((2, 5, 5), (3, 2, 3, 3), None, 1, 0, "conv2d needs x"),
])
def test_conv_rejects_bad_sizes(xp, impl, x_shape, w_shape, b_shape, stride, pad, message):
    b = None if b_shape is None else xp.zeros(b_shape)
    with pytest.raises(ValueError, match=message):
        CONVS[impl][0](xp.zeros(x_shape), xp.zeros(w_shape), b, stride, pad)


@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize("shape,size,stride,message", [
    ((1, 1, 4, 4), 2, 0, "stride must be a positive integer"),
    ((1, 1, 4, 4), 0, 1, "window size along H must be at least 1"),
    ((1, 1, 4, 4), 5, 1, "does not fit in H = 4"),
    ((1, 4, 4), 2, 2, "pooling needs x"),
])
def test_pool_rejects_bad_sizes(xp, kind, shape, size, stride, message):
    with pytest.raises(ValueError, match=message):
        POOLS[kind][0](xp.zeros(shape), size, stride)
