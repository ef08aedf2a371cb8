"""Convolution, pooling and flatten as functional pairs, with hand-derived gradients.

The convolution here is the *loop* version: one Python loop over the output positions, so that
each line reads like the formula. It is the teaching version and the test oracle for the fast
version in ``minimf/nn/im2col.py``; use it on tiny inputs only. Pooling and flatten are vectorised
(strided views, no loop over pixels) and fast enough for training.

Shape letters: N batch, C input channels, H x W input height x width, F filters (output
channels), HH x WW kernel height x width, H' x W' output height x width.
Layout (N, C, H, W) for images, (F, C, HH, WW) for weights, (F,) for the bias.

Output size (convolution with padding ``pad`` and step ``stride``; pooling uses pad = 0 and
HH = WW = size)::

    H' = (H + 2*pad - HH) // stride + 1        W' = (W + 2*pad - WW) // stride + 1

The floor means trailing rows/columns that do not fill a whole window are dropped (they get a
zero gradient). Every function works on NumPy and CuPy arrays alike.
"""
from numbers import Integral

from minimf.backend import get_array_module


def output_size(size, kernel, stride, pad=0, name="H"):
    """``(size + 2*pad - kernel) // stride + 1``, the number of window positions along one axis.

    Raises ValueError when stride < 1, pad < 0 or the window does not fit even once.
    """
    if not isinstance(stride, Integral) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if not isinstance(pad, Integral) or pad < 0:
        raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
    if not isinstance(kernel, Integral) or kernel < 1:
        raise ValueError(f"window size along {name} must be at least 1, got {kernel}")
    if size + 2 * pad < kernel:
        raise ValueError(
            f"window of size {kernel} does not fit in {name} = {size} with pad {pad}: "
            f"{name}' = ({size} + 2*{pad} - {kernel}) // {stride} + 1 < 1"
        )
    return (size + 2 * pad - kernel) // stride + 1


def conv_output_shape(x_shape, w_shape, stride=1, pad=0, b_shape=None):
    """(N, F, H', W') for x: (N, C, H, W) and w: (F, C, HH, WW); ValueError if they do not fit."""
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv2d needs x (N, C, H, W) and w (F, C, HH, WW), got {x_shape} and {w_shape}")
    N, C, H, W = x_shape
    F, Cw, HH, WW = w_shape
    if C != Cw:
        raise ValueError(f"channel mismatch: x has C = {C} channels but w expects {Cw} (w: {w_shape})")
    if b_shape is not None and tuple(b_shape) != (F,):
        raise ValueError(f"bias must have shape (F,) = ({F},), got {tuple(b_shape)}")
    return N, F, output_size(H, HH, stride, pad, "H"), output_size(W, WW, stride, pad, "W")


def pad_images(x, pad):
    """Zero-pad the two spatial axes of x: (N, C, H, W) -> (N, C, H + 2*pad, W + 2*pad)."""
    if pad == 0:
        return x
    xp = get_array_module(x)
    return xp.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


# -- convolution, the loop version ----------------------------------------------------------------

def conv2d_forward_naive(x, w, b=None, stride=1, pad=0):
    """Convolution (cross-correlation, as in every deep-learning library)::

        out[n, f, i, j] = b[f] + sum_{c, u, v} xpad[n, c, i*stride + u, j*stride + v] * w[f, c, u, v]

    where xpad is x with ``pad`` zeros around each image, u < HH and v < WW.

    x: (N, C, H, W)   w: (F, C, HH, WW)   b: (F,) or None (no bias)
    Returns out: (N, F, H', W') with H' = (H + 2*pad - HH) // stride + 1 (W' alike), and the
    cache ``(x, w, has_bias, stride, pad)``. One loop over the H' * W' output positions; each step
    is the formula above for all n and f at once.
    """
    N, F, Ho, Wo = conv_output_shape(x.shape, w.shape, stride, pad, None if b is None else b.shape)
    xp = get_array_module(x, w)
    HH, WW = w.shape[2:]
    xpad = pad_images(x, pad)
    out = xp.zeros((N, F, Ho, Wo), dtype=xp.result_type(x.dtype, w.dtype))
    for i in range(Ho):
        for j in range(Wo):
            window = xpad[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]  # (N, C, HH, WW)
            out[:, :, i, j] = (window[:, None] * w[None]).sum(axis=(2, 3, 4))         # (N, F)
    if b is not None:
        out += b.reshape(1, F, 1, 1)
    return out, (x, w, b is not None, stride, pad)


def conv2d_backward_naive(dout, cache):
    """Gradients of a scalar loss L through ``conv2d_forward_naive``, given dout = dL/dout.

    Every output out[n, f, i, j] touched one window of xpad and all of w[f], so, summed over the
    output positions (i, j)::

        dw[f, c, u, v] += sum_n dout[n, f, i, j] * xpad[n, c, i*stride + u, j*stride + v]
        dxpad[n, c, i*stride + u, j*stride + v] += sum_f dout[n, f, i, j] * w[f, c, u, v]
        db[f] = sum_{n, i, j} dout[n, f, i, j]

    and dx is dxpad without its border of padding.
    dout: (N, F, H', W'). Returns dx: (N, C, H, W), dw: (F, C, HH, WW), db: (F,) (None without bias).
    """
    x, w, has_bias, stride, pad = cache
    xp = get_array_module(dout, x)
    H, W = x.shape[2:]
    HH, WW = w.shape[2:]
    xpad = pad_images(x, pad)
    dxpad = xp.zeros(xpad.shape, dtype=xp.result_type(dout.dtype, w.dtype))
    dw = xp.zeros(w.shape, dtype=dxpad.dtype)
    for i in range(dout.shape[2]):
        for j in range(dout.shape[3]):
            rows = slice(i * stride, i * stride + HH)
            cols = slice(j * stride, j * stride + WW)
            d = dout[:, :, i, j]                                                   # (N, F)
            dw += (d[:, :, None, None, None] * xpad[:, None, :, rows, cols]).sum(axis=0)
            dxpad[:, :, rows, cols] += (d[:, :, None, None, None] * w[None]).sum(axis=1)
    dx = dxpad[:, :, pad:pad + H, pad:pad + W]
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw, db


# -- pooling ----------------------------------------------------------------------------------------

def pool_windows(x, size, stride):
    """A read-only strided *view* of all pooling windows of x, no copy.

    x: (N, C, H, W) -> windows: (N, C, H', W', size, size) with
    ``windows[n, c, i, j, u, v] = x[n, c, i*stride + u, j*stride + v]`` and
    H' = (H - size) // stride + 1 (W' alike). For size == stride and H, W divisible by it this is
    just ``x.reshape(N, C, H/s, s, W/s, s)`` with the axes reordered; as_strided covers every case.
    Never write into the view: overlapping windows share memory.
    """
    if x.ndim != 4:
        raise ValueError(f"pooling needs x of shape (N, C, H, W), got {x.shape}")
    N, C, H, W = x.shape
    Ho, Wo = output_size(H, size, stride, 0, "H"), output_size(W, size, stride, 0, "W")
    xp = get_array_module(x)
    sN, sC, sH, sW = x.strides                     # in bytes, as as_strided wants them
    return xp.lib.stride_tricks.as_strided(
        x, shape=(N, C, Ho, Wo, size, size), strides=(sN, sC, sH * stride, sW * stride, sH, sW))


def window_offsets(HH, WW, stride, Ho, Wo):
    """Yield ``(u, v, index)`` for each offset (u, v) inside a HH x WW window, where
    ``a[index]`` is the strided (N, C, H', W') slice ``a[:, :, i*stride + u, j*stride + v]`` over
    all window positions (i, j). Backward passes add into such slices: HH * WW steps, none per pixel.
    """
    for u in range(HH):
        for v in range(WW):
            yield u, v, (slice(None), slice(None),
                         slice(u, u + stride * (Ho - 1) + 1, stride),
                         slice(v, v + stride * (Wo - 1) + 1, stride))


def avg_pool_forward(x, size=2, stride=2):
    """Average pooling: ``out[n, c, i, j] = mean_{u, v < size} x[n, c, i*stride + u, j*stride + v]``.

    x: (N, C, H, W). Returns out: (N, C, H', W') with H' = (H - size) // stride + 1 (W' alike),
    and the cache ``(x.shape, size, stride)``.
    """
    out = pool_windows(x, size, stride).mean(axis=(4, 5))
    return out, (x.shape, size, stride)


def avg_pool_backward(dout, cache):
    """``dx[n, c, i*stride + u, j*stride + v] += dout[n, c, i, j] / size**2`` for every window (i, j).

    One step per window offset (u, v): size * size strided-slice additions, none over pixels.
    Where windows overlap (stride < size) a pixel collects from each window it belongs to.
    dout: (N, C, H', W'). Returns dx: (N, C, H, W); pixels in no window get 0.
    """
    shape, size, stride = cache
    xp = get_array_module(dout)
    dx = xp.zeros(shape, dtype=dout.dtype)
    share = dout / (size * size)
    for _, _, index in window_offsets(size, size, stride, *dout.shape[2:]):
        dx[index] += share
    return dx


def max_pool_forward(x, size=2, stride=2):
    """Max pooling: ``out[n, c, i, j] = max_{u, v < size} x[n, c, i*stride + u, j*stride + v]``.

    x: (N, C, H, W). Returns out: (N, C, H', W') with H' = (H - size) // stride + 1 (W' alike),
    and the cache ``(x.shape, argmax, size, stride)``; argmax: (N, C, H', W') holds the position
    k = u*size + v of the maximum inside each window.
    Ties: the gradient goes to ONE element, the first maximum in row-major order within the
    window (smallest u, then smallest v), which is argmax's rule in NumPy and CuPy.
    """
    windows = pool_windows(x, size, stride)
    N, C, Ho, Wo = windows.shape[:4]
    flat = windows.reshape(N, C, Ho, Wo, size * size)   # a copy: the windows may overlap
    argmax = flat.argmax(axis=4)
    return flat.max(axis=4), (x.shape, argmax, size, stride)


def max_pool_backward(dout, cache):
    """``dx[n, c, i*stride + u, j*stride + v] += dout[n, c, i, j]`` for the (u, v) that held the
    maximum of window (i, j), nothing for the others (the derivative of max is an indicator).

    One step per window offset (u, v), as in avg_pool_backward, masked by ``argmax == u*size + v``.
    dout: (N, C, H', W'). Returns dx: (N, C, H, W).
    """
    shape, argmax, size, stride = cache
    xp = get_array_module(dout)
    dx = xp.zeros(shape, dtype=dout.dtype)
    for u, v, index in window_offsets(size, size, stride, *dout.shape[2:]):
        dx[index] += dout * (argmax == u * size + v)
    return dx


# -- flatten ----------------------------------------------------------------------------------------

def flatten_forward(x):
    """Flatten each example: x: (N, C, H, W) -> out: (N, C*H*W) in row-major (c, h, w) order.

    Returns out and the cache ``x.shape``. Put between the last conv/pool layer and a dense layer.
    """
    return x.reshape(x.shape[0], -1), x.shape


def flatten_backward(dout, cache):
    """dout: (N, C*H*W) -> dx: (N, C, H, W); flattening moves numbers, so the gradient moves back."""
    return dout.reshape(cache)


# -- initialisation ---------------------------------------------------------------------------------

def init_conv(rng, in_channels, filters, kernel, xp, dtype="float32", bias=True):
    """Initial w: (F, C, HH, WW) with HH = WW = kernel and b: (F,) (or None), uniform in
    ±1/sqrt(fan_in), fan_in = C * HH * WW (the inputs each output sums over).

    This is PyTorch's default for ``nn.Conv2d`` (Kaiming-uniform with a = sqrt(5) works out to
    the same bound), as ``init_dense`` is for ``nn.Linear``. Drawn on the host by ``rng``, then
    moved to ``xp``.
    """
    fan_in = in_channels * kernel * kernel
    bound = 1.0 / fan_in ** 0.5
    w = xp.asarray(rng.uniform(-bound, bound, size=(filters, in_channels, kernel, kernel)), dtype=dtype)
    b = xp.asarray(rng.uniform(-bound, bound, size=filters), dtype=dtype) if bias else None
    return w, b
