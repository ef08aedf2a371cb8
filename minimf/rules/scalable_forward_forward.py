"""Scalable Forward-Forward (SFF; Krutsylo 2025, "Scalable Forward-Forward Algorithm",
arXiv 2501.03176): every block of a CNN learns from its own class-wise goodness, and the hybrid mode
backpropagates INSIDE a block while the gradient is still cut BETWEEN blocks.

Block i (``hybrid=True``, the default: a residual block of two 3x3 convolutions, padding 1):

    x^ = layer_norm(x)                          per example over (C_in, H, W), minimf/nn/norm.py
    h = relu(conv(x^, W) + b)                   (N, F, H, W)
    r = relu(conv(h, W2) + b2 + h)              the second conv with a residual (identity) shortcut
    a = pool(r)                                 2x2, stride 2: (N, F, H', W'), passed to block i+1

``hybrid=False`` is one conv per block, a = pool(relu(conv(x^, W) + b)) (minimf/nn/cnn.py's block).
As in the paper, what passes from one block to the next is layer-normalised (for the first block:
the image, standardised per example), and the gradient is detached there.
The goodness comes from an auxiliary 1x1 convolution M: (C, F, 1, 1) with ONE output channel per
class, and a class's goodness is the mean squared activation of its channel:

    s = conv1x1(a, M),   s[n, c, i, j] = sum_f M[c, f] a[n, f, i, j]          (N, C, H', W')   (SFF-1)
    G[n, c] = 1/(H' W') sum_{i, j} s[n, c, i, j]^2                                             (SFF-2)
    L = -(1/N) sum_n log softmax(G)_{n, y_n}                                                   (SFF-3)

and its gradient, the chain rule back to the block's input and no further:

    dG = (softmax(G) - onehot(y)) / N
    ds[n, c, i, j] = dG[n, c] 2 s[n, c, i, j] / (H' W')                                        (SFF-4)
    dM = sum_{n, i, j} ds a^T,   da = M^T ds    (the 1x1 convolution's backward)
    dr = pool_backward(da),   du = dr * 1[r > 0]         u = conv(h, W2) + b2 + h
    dW2, db2, dh = conv_backward(du)  +  du              the shortcut adds du to dh
    dz = dh * 1[h > 0],   dW, db = conv_param_grads(dz)  STOP: no gradient to x^ (nor x)

So inside a block the two convolutions learn together by backprop (the "hybrid" of the paper);
between blocks nothing flows, exactly as in MF, whose block is read out by a projection M of the
flattened output instead (G = flat(a) M^T). SFF's read-out has C*F parameters whatever the map
size; MF's has C*F*H'*W'.

Prediction uses ``MonoForwardModel``: "bp" mode = the last block's goodness, "ff" mode = the sum
over blocks; ``evaluate`` gives both and every block's own accuracy.

Not here: the paper's larger architectures, augmentation and schedules. minimf implements the rule
with the project's 3x3 conv blocks and 2x2 pooling.

Shape letters: N batch, C_in input channels, F block channels, H x W block input size,
H' x W' = H // 2 x W // 2 its output size, C classes.
"""
from minimf.backend import get_backend, make_rng
from minimf.checks import check_channels, check_image_shape
from minimf.nn.cnn import KERNEL, PAD, POOL, POOLING, block_shapes, check_pool, conv_block_backward, conv_block_forward
from minimf.nn.conv import init_conv
from minimf.nn.im2col import conv2d_backward, conv2d_forward, conv2d_param_grads
from minimf.nn.layers import relu_backward, relu_forward
from minimf.nn.losses import softmax_cross_entropy
from minimf.nn.norm import layer_norm
from minimf.rules.mono_forward import MonoForwardModel


def residual_block_forward(x, W, b, W2, b2, pool="avg"):
    """a = pool(relu(conv(h, W2) + b2 + h)) with h = relu(conv(x, W) + b); 3x3 convs, padding 1.

    x: (N, C_in, H, W)   W: (F, C_in, 3, 3)   W2: (F, F, 3, 3)   b, b2: (F,) or None
    Returns a: (N, F, H // 2, W // 2) and the cache for ``residual_block_backward``.
    """
    z, conv_cache = conv2d_forward(x, W, b, stride=1, pad=PAD)
    h, relu_cache = relu_forward(z)
    u, conv2_cache = conv2d_forward(h, W2, b2, stride=1, pad=PAD)
    r, relu2_cache = relu_forward(u + h)                        # the residual shortcut
    a, pool_cache = POOLING[pool][0](r, POOL, POOL)
    return a, (conv_cache, relu_cache, conv2_cache, relu2_cache, pool_cache, pool)


def residual_block_backward(da, cache):
    """Gradients of ``residual_block_forward``'s parameters given da: (N, F, H', W'); none for x.

    Returns {"W", "b", "W2", "b2"} (the biases None without bias).
    """
    conv_cache, relu_cache, conv2_cache, relu2_cache, pool_cache, pool = cache
    du = relu_backward(POOLING[pool][1](da, pool_cache), relu2_cache)
    dh, dW2, db2 = conv2d_backward(du, conv2_cache)
    dh = dh + du                                               # the shortcut's share
    dW, db = conv2d_param_grads(relu_backward(dh, relu_cache), conv_cache)
    return {"W": dW, "b": db, "W2": dW2, "b2": db2}


def class_goodness(a, M):
    """(SFF-1, SFF-2) G: (N, C) and s: (N, C, H', W') from a: (N, F, H', W') and M: (C, F, 1, 1)."""
    s, cache = conv2d_forward(a, M, None, stride=1, pad=0)
    return (s * s).mean(axis=(2, 3)), (s, cache)


def class_goodness_backward(dG, goodness_cache):
    """(SFF-4) da: (N, F, H', W') and dM: (C, F, 1, 1) from dG: (N, C)."""
    s, cache = goodness_cache
    H, W = s.shape[2:]
    ds = dG[:, :, None, None] * 2 * s / (H * W)
    da, dM, _ = conv2d_backward(ds, cache)
    return da, dM


class ScalableForwardForwardBlock:
    """One SFF block with its 1x1 read-out M and its own loss.

    Arrays: W (F, C_in, 3, 3), b (F,) or None, with ``hybrid`` also W2 (F, F, 3, 3), b2 (F,) or None,
    and M (C, F, 1, 1). ``params`` maps their names to them (the layer interface of MonoForwardModel).
    """

    def __init__(self, in_channels, filters, num_classes, rng, xp, dtype="float32", bias=True, pool="avg",
                 hybrid=True):
        self.pool = check_pool(pool)
        self.hybrid = bool(hybrid)
        self.W, self.b = init_conv(rng, in_channels, filters, KERNEL, xp, dtype, bias)
        self.W2, self.b2 = init_conv(rng, filters, filters, KERNEL, xp, dtype, bias) if hybrid else (None, None)
        self.M = init_conv(rng, filters, num_classes, 1, xp, dtype, bias=False)[0]   # +-1/sqrt(F)

    @property
    def params(self):
        block = {"W": self.W, "b": self.b}
        if self.hybrid:
            block.update(W2=self.W2, b2=self.b2)
        return {**block, "M": self.M}

    def _block_forward(self, x):
        x = layer_norm(x)                   # the block's input, layer-normalised; no gradient reaches it
        if self.hybrid:
            return residual_block_forward(x, self.W, self.b, self.W2, self.b2, self.pool)
        return conv_block_forward(x, self.W, self.b, self.pool)

    def forward(self, x):
        """a: (N, F, H // 2, W // 2) from x: (N, C_in, H, W)."""
        return self._block_forward(x)[0]

    def goodness(self, a):
        """G: (N, C), each class's mean squared 1x1-conv channel (SFF-2)."""
        return class_goodness(a, self.M)[0]

    def local_gradients(self, x, y):
        """Forward this block and differentiate its own loss (SFF-3); nothing is updated.

        x: (N, C_in, H, W) the block's input (a constant: no gradient reaches it), y: (N,) labels.
        Returns (a, loss, grads) with grads keyed like ``params``.
        """
        a, block_cache = self._block_forward(x)
        G, goodness_cache = class_goodness(a, self.M)               # (SFF-1, SFF-2)
        loss, dG = softmax_cross_entropy(G, y)                      # (SFF-3)
        da, dM = class_goodness_backward(dG, goodness_cache)        # (SFF-4)
        if self.hybrid:
            grads = residual_block_backward(da, block_cache)        # backprop inside the block only
        else:
            _, dW, db = conv_block_backward(da, block_cache, input_grad=False)
            grads = {"W": dW, "b": db}
        return a, loss, {**grads, "M": dM}


class ScalableForwardForwardCNN(MonoForwardModel):
    """SFF blocks ``channels = [F_1, ..., F_L]``, each halving the image (2x2 pooling), each with
    its own 1x1 read-out and loss; training, prediction ("bp": last block, "ff": sum of blocks),
    per-block accuracy and saving come from ``MonoForwardModel``. ``hybrid=False``: one conv per block.
    """

    BATCH_SPLIT = False   # not checked for SFF's blocks (minimf/parallel/batch_split.py is tested on MF, BP, FA, DFA)
    PIPELINE = False      # not wired up for SFF's blocks

    def __init__(self, input_shape=(1, 28, 28), channels=(64, 128, 256, 512), num_classes=10,
                 backend="numpy", seed=0, bias=True, optimizer="adam", lr=1e-3, dtype="float32",
                 pool="avg", hybrid=True):
        input_shape = check_image_shape(input_shape)
        self.channels = check_channels(channels, num_classes)
        self.shapes = block_shapes(input_shape, self.channels)
        self.pool = check_pool(pool)
        xp = get_backend(backend)
        rng = make_rng(seed)
        layers = [ScalableForwardForwardBlock(shape_in[0], shape_out[0], int(num_classes), rng, xp, dtype, bias,
                                              pool, hybrid)
                  for shape_in, shape_out in zip(self.shapes[:-1], self.shapes[1:])]
        super().__init__(layers, input_shape, num_classes, xp, dtype, optimizer, lr)
