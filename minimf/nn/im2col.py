"""Fast convolution: im2col turns a whole convolution layer into ONE matrix product.

The loop version (``conv2d_forward_naive`` in minimf/nn/conv.py) takes, for every output position
(i, j), the dot product of one window of the padded input with each filter. im2col ("image to
columns") copies every window into one column of a matrix first; then all those dot products
are a single matrix product, which BLAS (or cuBLAS) does far faster than a Python loop::

    one image, one channel, H = W = 3        2 x 2 kernel, stride 1: H' = W' = 2, four windows

        a b c                                window (i, j):   (0,0) (0,1) (1,0) (1,1)
        d e f           -- im2col -->        row (u, v) (0,0)   a     b     d     e
        g h i                                           (0,1)   b     c     e     f
                                                        (1,0)   d     e     g     h
                                                        (1,1)   e     f     h     i

        out[f, (i, j)] = sum_{(u, v)} w[f, u, v] * cols[(u, v), (i, j)],  i.e.  out = w2 @ cols

With C channels and N images the rows are indexed by (c, u, v) and the columns by (n, i, j)::

    cols: (K, M) with K = C*HH*WW, M = N*H'*W'     cols[(c, u, v), (n, i, j)] = xpad[n, c, i*s + u, j*s + v]
    w2 = w.reshape(F, K): (F, K)                   (its columns are in the same (c, u, v) order)
    out = w2 @ cols: (F, M)  -> reshaped to (F, N, H', W') -> transposed to (N, F, H', W')

Backward, with d = dout laid out as (F, M) like out::

    dw = d @ cols.T      (F, K)       db = d summed over M
    dcols = w2.T @ d     (K, M)       dx = col2im(dcols): every column added back onto its window

Output size as in conv.py: H' = (H + 2*pad - HH) // stride + 1, W' = (W + 2*pad - WW) // stride + 1.
The windows are read through a strided *view* of xpad (``as_strided``), so the only copy is the
reshape into cols. col2im adds one strided slice per kernel offset (u, v): HH*WW steps, no loop
over pixels and no scatter-add. Float32 in gives float32 out. Works on NumPy and CuPy.
"""
from minimf.backend import get_array_module
from minimf.nn.conv import conv_output_shape, pad_images, window_offsets


def im2col(xpad, HH, WW, stride, Ho, Wo):
    """cols: (C*HH*WW, N*H'*W') with ``cols[(c, u, v), (n, i, j)] = xpad[n, c, i*stride + u, j*stride + v]``.

    xpad: (N, C, Hp, Wp), already padded. The 6-d strided view has the axes in the order of
    (row index, column index); reshaping it to 2-d makes the one copy.
    """
    xp = get_array_module(xpad)
    N, C = xpad.shape[:2]
    sN, sC, sH, sW = xpad.strides                  # bytes
    windows = xp.lib.stride_tricks.as_strided(
        xpad, shape=(C, HH, WW, N, Ho, Wo), strides=(sC, sH, sW, sN, sH * stride, sW * stride))
    return windows.reshape(C * HH * WW, N * Ho * Wo)


def col2im(dcols, xpad_shape, HH, WW, stride, Ho, Wo):
    """The adjoint of im2col: dxpad[n, c, i*stride + u, j*stride + v] += dcols[(c, u, v), (n, i, j)].

    dcols: (C*HH*WW, N*H'*W') -> dxpad: (N, C, Hp, Wp). For each kernel offset (u, v), the
    (C, N, H', W') block of dcols lands on one strided slice of dxpad; pixels shared by
    overlapping windows receive one addition per window, as the gradient requires.
    The sums are made in a (C, N, Hp, Wp) array, the order of dcols' blocks, so every addition
    reads its block straight through; the result is that array's transposed *view* (N, C, Hp, Wp),
    not C-contiguous (faster than adding the blocks, transposed, into an (N, C, Hp, Wp) array).
    """
    xp = get_array_module(dcols)
    N, C = xpad_shape[:2]
    blocks = dcols.reshape(C, HH, WW, N, Ho, Wo)
    dxpad = xp.zeros((C, N, *xpad_shape[2:]), dtype=dcols.dtype)     # (C, N, Hp, Wp)
    for u, v, index in window_offsets(HH, WW, stride, Ho, Wo):
        dxpad[index] += blocks[:, u, v]
    return dxpad.transpose(1, 0, 2, 3)


def conv2d_forward(x, w, b=None, stride=1, pad=0):
    """Convolution ``out[n, f, i, j] = b[f] + sum_{c,u,v} xpad[n, c, i*stride + u, j*stride + v] * w[f, c, u, v]``
    as one matrix product (same results as ``conv2d_forward_naive``).

    x: (N, C, H, W)   w: (F, C, HH, WW)   b: (F,) or None
    Returns out: (N, F, H', W') and the cache ``(x.shape, cols, w, has_bias, stride, pad)``.
    out is the product's (F, N, H', W') array seen through transposed axes, not C-contiguous:
    copying it into (N, F, H', W') order would be a pass over the largest array of a conv step, and
    every operation after it (ReLU, pooling, im2col's strided view) takes any strides.
    """
    N, F, Ho, Wo = conv_output_shape(x.shape, w.shape, stride, pad, None if b is None else b.shape)
    HH, WW = w.shape[2:]
    cols = im2col(pad_images(x, pad), HH, WW, stride, Ho, Wo)     # (K, M)
    out = w.reshape(F, -1) @ cols                                   # (F, M): the one product
    if b is not None:
        out += b.reshape(F, 1)
    out = out.reshape(F, N, Ho, Wo).transpose(1, 0, 2, 3)
    return out, (x.shape, cols, w, b is not None, stride, pad)


def conv2d_backward(dout, cache):
    """Gradients through ``conv2d_forward`` (same results as ``conv2d_backward_naive``).

    dout: (N, F, H', W'). Returns dx: (N, C, H, W), dw: (F, C, HH, WW), db: (F,) (None without bias).
    """
    x_shape, cols, w, has_bias, stride, pad = cache
    N, C, H, W = x_shape
    F, _, HH, WW = w.shape
    Ho, Wo = dout.shape[2:]
    d, dw, db = _param_grads(dout, cols, w, has_bias)
    dcols = w.reshape(F, -1).T @ d                                 # (K, M)
    dxpad = col2im(dcols, (N, C, H + 2 * pad, W + 2 * pad), HH, WW, stride, Ho, Wo)
    return dxpad[:, :, pad:pad + H, pad:pad + W], dw, db


def conv2d_param_grads(dout, cache):
    """Only ``(dw, db)`` of ``conv2d_forward``: what a local rule needs when the gradient stops at x.

    Skipping dcols = w2^T @ d and col2im saves a matrix product and HH*WW strided additions
    (as ``dense_param_grads`` does for a dense layer). dout: (N, F, H', W') -> dw: (F, C, HH, WW),
    db: (F,) or None.
    """
    _, cols, w, has_bias, _, _ = cache
    return _param_grads(dout, cols, w, has_bias)[1:]


def _param_grads(dout, cols, w, has_bias):
    """d: dout laid out as (F, M) with columns (n, i, j); dw = d @ cols^T; db = d summed over M."""
    F = w.shape[0]
    d = dout.transpose(1, 0, 2, 3).reshape(F, -1)                  # (F, M), columns (n, i, j); a view
    #   when dout lies in memory as (F, N, H', W'), as the conv blocks lay it out (minimf/nn/cnn.py)
    # dw = d @ cols^T, computed as (cols @ d^T)^T: the same numbers, but multithreaded OpenBLAS can be
    # far slower on the first form (a short, wide output, long sums)
    dw = (cols @ d.T).T.reshape(w.shape)                           # (F, K) -> (F, C, HH, WW)
    db = d.sum(axis=1) if has_bias else None
    return d, dw, db
