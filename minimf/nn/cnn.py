"""The convolutional architecture that Mono-Forward and backprop share: a stack of conv blocks.

One conv block maps an image batch to a smaller one::

    z = conv(x, W) + b      3x3 kernel, stride 1, padding 1: size-preserving, (N, F, H, W)
    r = relu(z)
    a = pool(r)             2x2 windows, stride 2 (average by default, the paper's choice; or max)

so a block halves height and width (floor): 28 -> 14 -> 7 -> 3 -> 1 and 32 -> 16 -> 8 -> 4 -> 2 for
four blocks. ``conv_block_forward`` and ``conv_block_backward`` are the block as a functional
pair, built from the im2col convolution (minimf/nn/im2col.py) and the pooling of minimf/nn/conv.py;
``ConvLayer`` holds one block's parameters.

Shape letters: N batch, C input channels, H x W input size, F filters (the block's channels),
H' x W' = H // 2 x W // 2 the block's output size.
"""
from minimf.backend import get_array_module
from minimf.nn.conv import (avg_pool_backward, init_conv, max_pool_backward, max_pool_forward, output_size,
                            window_offsets)
from minimf.nn.im2col import conv2d_backward, conv2d_forward, conv2d_param_grads
from minimf.nn.layers import relu_backward, relu_forward

KERNEL = 3       # 3x3 kernels ...
PAD = 1          # ... with padding 1 keep H x W
POOL = 2         # 2x2 pooling windows with stride 2 halve it


def avg_pool_by_offsets(x, size=POOL, stride=POOL):
    """Average pooling, ``out[n, c, i, j] = mean_{u, v < size} x[n, c, i*stride + u, j*stride + v]``,
    as size * size additions of strided slices, one per window offset (u, v): the mirror image
    of ``avg_pool_backward``.

    The same numbers as ``minimf.nn.conv.avg_pool_forward`` (the readable version, which averages a
    6-d window view and is the test oracle), up to float rounding, but faster: NumPy reduces over
    the view's two short, strided axes slowly, and adds whole strided slices quickly.
    x: (N, C, H, W) -> out: (N, C, H', W'), cache ``(x.shape, size, stride)`` as avg_pool_backward expects.
    """
    Ho, Wo = output_size(x.shape[2], size, stride), output_size(x.shape[3], size, stride)
    offsets = window_offsets(size, size, stride, Ho, Wo)
    out = x[next(offsets)[2]].copy()       # offset (0, 0)
    for _, _, index in offsets:             # the other size * size - 1 offsets
        out += x[index]
    out *= 1 / (size * size)
    return out, (x.shape, size, stride)


def avg_pool_backward_by_offsets(dout, cache, like=None):
    """``minimf.nn.conv.avg_pool_backward`` (the readable version and the test oracle) when the windows
    do not overlap (stride >= size): then every pixel lies in at most one window, so its gradient
    is WRITTEN, ``dx[index] = dout / size**2`` once per offset (u, v), instead of added into zeros.

    Pixels in no window (the last row or column of an odd map, or gaps when stride > size) are set
    to 0. The same numbers, faster: no zero-filled pass, no reads of dx.
    dout: (N, C, H', W') -> dx: (N, C, H, W). Overlapping windows fall back to the readable version.
    ``like`` (optional, an array of dx's shape): dx gets its memory layout, e.g. (C, N, H, W) seen as
    (N, C, H, W), the layout of a convolution's output (minimf/nn/im2col.py), so that the convolution's
    backward reads dx as a (C, N*H*W) matrix without copying it.
    """
    shape, size, stride = cache
    if stride < size:
        return avg_pool_backward(dout, cache)
    xp = get_array_module(dout)
    Ho, Wo = dout.shape[2:]
    dx = xp.empty(shape, dtype=dout.dtype) if like is None else xp.empty_like(like, dtype=dout.dtype)
    if stride > size:
        dx[...] = 0                       # gaps between windows
    dx[:, :, Ho * stride:] = 0            # rows below the last window
    dx[:, :, :, Wo * stride:] = 0         # columns right of the last window
    share = dout * (1 / (size * size))
    for _, _, index in window_offsets(size, size, stride, Ho, Wo):
        dx[index] = share
    return dx


POOLING = {"avg": (avg_pool_by_offsets, avg_pool_backward_by_offsets), "max": (max_pool_forward, max_pool_backward)}


def check_pool(pool):
    """``pool`` must name one of POOLING ("avg" or "max")."""
    if pool not in POOLING:
        raise ValueError(f"unknown pooling {pool!r}: choose 'avg' or 'max'")
    return pool


def block_shapes(input_shape, channels):
    """[(C, H, W), (F_1, H_1, W_1), ..., (F_L, H_L, W_L)]: the input and every block's output.

    H_i = H_{i-1} // 2 (W alike). Raises ValueError when the maps become too small to pool,
    e.g. an 8 x 8 input with four blocks (8 -> 4 -> 2 -> 1, and a 2x2 window does not fit in 1).
    """
    shapes = [tuple(input_shape)]
    for i, filters in enumerate(channels, start=1):
        _, H, W = shapes[-1]
        if min(H, W) < POOL:
            raise ValueError(
                f"input {input_shape[1]}x{input_shape[2]} is too small for {len(channels)} conv blocks: "
                f"block {i} gets {H}x{W} maps, and its {POOL}x{POOL} pooling needs at least {POOL}x{POOL}")
        shapes.append((filters, output_size(H, POOL, POOL), output_size(W, POOL, POOL)))
    return shapes


def conv_block_forward(x, W, b, pool="avg"):
    """a = pool(relu(conv(x, W) + b)), 3x3 convolution with padding 1, then 2x2 pooling with stride 2.

    x: (N, C, H, W)   W: (F, C, 3, 3)   b: (F,) or None
    Returns a: (N, F, H // 2, W // 2) and the cache ``(conv_cache, relu_cache, pool_cache, pool)``.
    """
    z, conv_cache = conv2d_forward(x, W, b, stride=1, pad=PAD)
    r, relu_cache = relu_forward(z, out=z)          # in place: z is fresh from the convolution
    a, pool_cache = POOLING[pool][0](r, POOL, POOL)
    return a, (conv_cache, relu_cache, pool_cache, pool)


def conv_block_backward(da, cache, input_grad=True):
    """Gradients through ``conv_block_forward`` given da = dL/da: through the pooling, the ReLU
    mask and the convolution, in that order::

        dr = pool_backward(da)      dz = dr * 1[z > 0]      dW, db, dx from the convolution

    da: (N, F, H', W'). Returns dx: (N, C, H, W) (None when ``input_grad`` is False: Mono-Forward
    stops every gradient at the block's input, and backprop's first block has no use for it),
    dW: (F, C, 3, 3), db: (F,) or None.
    """
    conv_cache, relu_cache, pool_cache, pool = cache
    if pool == "avg":    # dr laid out in memory as z, (F, N, H, W): the conv backward then needs no copy
        dr = avg_pool_backward_by_offsets(da, pool_cache, like=relu_cache)
    else:
        dr = POOLING[pool][1](da, pool_cache)
    dz = relu_backward(dr, relu_cache, out=dr)      # in place: dr is fresh from the pooling
    if not input_grad:
        return (None, *conv2d_param_grads(dz, conv_cache))
    return conv2d_backward(dz, conv_cache)


class ConvLayer:
    """Parameters of one conv block: W (F, C, 3, 3) and b (F,) or None, in the dict ``params``
    (initialised by ``init_conv``)."""

    def __init__(self, in_channels, filters, rng, xp, dtype="float32", bias=True):
        self.W, self.b = init_conv(rng, in_channels, filters, KERNEL, xp, dtype, bias)

    @property
    def params(self):
        return {"W": self.W, "b": self.b}
