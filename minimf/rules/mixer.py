"""Backprop and Mono-Forward on an MLP-Mixer (minimf/nn/mixer.py): MF v2's headline architecture
("MF v2" = arXiv 2501.09238v2, which reports MF beating BP on PathMNIST with Mixers "while requiring
only 31% of backpropagation's memory").

The trunk is the same for both rules, and a seed gives both the same initial trunk (it is drawn
first; the heads after it)::

    X_0 = patches(x) W_e + b_e                  (MX-1) patch embedding, (N, S, D)
    X_i = block_i(X_{i-1}),   i = 1..L          (MX-2, MX-3) token mixing, then channel mixing

``BackpropMixer``: one head on top, scores = mean_s(X_L) W_h + b_h (MX-5, MX-6), one
cross-entropy, and the chain rule from the top through every block down to the patch embedding.
The backward pass needs every block's cache, so BP holds the activations of ALL L blocks at once
(each block's cache is let go once its backward is done, as PyTorch's autograd does).

``MonoForwardMixer``: every block is an MF layer with its own projection head and its own loss
(the patch embedding belongs to the first block's layer: it has no loss of its own, and block 1's
loss trains it)::

    p_i = (1/S) sum_s X_i[:, s, :]               (MX-5) the block's output pooled over patches, (N, D)
    G_i = p_i M_i^T,   M_i: (K, D)               (5) goodness
    L_i = -(1/N) sum_n log softmax(G_i)_{n, y_n} (6) local cross-entropy
    dG_i = (softmax(G_i) - onehot(y)) / N
    dM_i = dG_i^T p_i                            (7)
    dX_i = repeat_s(dG_i M_i / S)                the error reaches the block only through M_i
    backprop INSIDE block i (MX-8, MX-10 and the dense maps) to its parameters    (8)
    STOP at X_{i-1}: the next block gets X_i as a plain array, nothing flows between blocks

as Scalable Forward-Forward's hybrid blocks do (minimf/rules/scalable_forward_forward.py). So a step
needs ONE block's cache at a time: block i's activations, its gradients, its update, then they can go.

Why M_i reads the POOLED output, with K x D parameters, and not the flattened X_i (K x S*D, the
literal reading of MF v1's M_i of shape C x n_i that minimf's CNN uses): (a) it is exactly the
Mixer's own classifier (average pooling, then a dense map), so block i's head asks "classify from
here" in the architecture's own terms, and the last block's head is BP's head without its bias;
(b) its size does not grow with the number of patches (S = 49 on MNIST with 4 x 4 patches:
10 x 49 x D against 10 x D), so the heads stay a small share of MF's parameters and memory, which is
the quantity under measurement. MF v2's own head could not be read; this is the choice made here.

Prediction and evaluation are ``MonoForwardModel``'s: "bp" mode the last block's goodness, "ff" mode
the sum over blocks, and every block's own accuracy. The layers have the interface of
minimf/rules/mono_forward.py (``params``, ``forward``, ``goodness``, ``local_gradients``), so
``train_layer``, the threaded pipeline (minimf/parallel/pipeline.py) and the Ray actors
(minimf/parallel/ray_pipeline.py) train them unchanged, and ``loss_and_gradients`` serves the
batch split.

Shape letters: N batch, (C, H, W) one image, P patch size, S = (H/P)(W/P) patches, D width,
H_t / H_c the token / channel MLPs' hidden sizes, K classes, L depth (blocks).
"""
from minimf.backend import get_backend, make_rng
from minimf.checks import check_image_shape
from minimf.nn.layers import DenseLayer
from minimf.nn.losses import softmax_cross_entropy
from minimf.nn.mixer import (MixerBlock, PatchEmbedding, global_avg_pool_backward, global_avg_pool_forward,
                             mixer_block_backward, mixer_block_forward, mixer_head_backward, mixer_head_forward,
                             patch_embed_backward, patch_embed_forward, patch_grid)
from minimf.rules.backprop import BackpropModel
from minimf.rules.mono_forward import MonoForwardModel

# the Mixer's sizes, the constructor options beyond the common ones (minimf/training/registry.py)
MIXER_OPTIONS = ("patch", "width", "token_hidden", "channel_hidden", "depth")


def check_mixer_sizes(width, token_hidden, channel_hidden, depth, num_classes):
    """Positive integer sizes and at least two classes; returns them as ints."""
    sizes = {"width": width, "token_hidden": token_hidden, "channel_hidden": channel_hidden, "depth": depth}
    for name, value in sizes.items():
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return tuple(int(v) for v in sizes.values())


def build_trunk(input_shape, patch, width, token_hidden, channel_hidden, depth, rng, xp, dtype, bias):
    """The patch embedding and ``depth`` Mixer blocks, drawn from ``rng`` in that order (BP and MF
    draw their heads after this, so one seed gives both the same trunk)."""
    gh, gw = patch_grid(input_shape, patch)
    embedding = PatchEmbedding(input_shape, patch, width, rng, xp, dtype, bias)
    blocks = [MixerBlock(gh * gw, width, token_hidden, channel_hidden, rng, xp, dtype, bias) for _ in range(depth)]
    return embedding, blocks


class MixerSizes:
    """What both Mixers record of their sizes: ``input_shape`` (C, H, W), ``patch``, ``patches`` (S),
    ``width``, ``token_hidden``, ``channel_hidden``, ``depth``."""

    def _record_sizes(self, input_shape, patch, width, token_hidden, channel_hidden, depth, num_classes):
        input_shape = check_image_shape(input_shape)
        width, token_hidden, channel_hidden, depth = check_mixer_sizes(width, token_hidden, channel_hidden,
                                                                       depth, num_classes)
        gh, gw = patch_grid(input_shape, patch)
        self.patch, self.patches = patch, gh * gw
        self.width, self.token_hidden, self.channel_hidden, self.depth = width, token_hidden, channel_hidden, depth
        return input_shape

    def _trunk(self, input_shape, patch, width, token_hidden, channel_hidden, depth, num_classes, backend, seed,
               dtype, bias):
        """The sizes recorded, then (input_shape, xp, rng, the patch embedding, the blocks): the trunk
        both rules share, drawn first from the seed's generator (the heads are drawn after it)."""
        input_shape = self._record_sizes(input_shape, patch, width, token_hidden, channel_hidden, depth, num_classes)
        xp, rng = get_backend(backend), make_rng(seed)
        embedding, blocks = build_trunk(input_shape, patch, self.width, self.token_hidden, self.channel_hidden,
                                        self.depth, rng, xp, dtype, bias)
        return input_shape, xp, rng, embedding, blocks


# --- backprop ------------------------------------------------------------------------------------------

class BackpropMixer(MixerSizes, BackpropModel):
    """An MLP-Mixer trained end to end by backprop: patch embedding, ``depth`` Mixer blocks, average
    pooling and a dense head D -> K (checks, evaluation and saving: ``BackpropModel``, ``Network``).

    ``layers`` = [the patch embedding (W (C*P*P, D), b (D,)), block 1, ..., block L (each keyed by
    minimf.nn.mixer.BLOCK_PARAMS), the head (W (D, K), b (K,))], each with its own optimiser.
    """

    BATCH_SPLIT = True      # no batch statistics: the batch gradient is the mean of its parts'
    OPTIONS = MIXER_OPTIONS

    def __init__(self, input_shape=(1, 28, 28), patch=4, width=128, token_hidden=64, channel_hidden=512, depth=4,
                 num_classes=10, backend="numpy", seed=0, bias=True, optimizer="adam", lr=1e-3, dtype="float32"):
        input_shape, xp, rng, embedding, blocks = self._trunk(input_shape, patch, width, token_hidden,
                                                              channel_hidden, depth, num_classes, backend, seed,
                                                              dtype, bias)
        head = DenseLayer(self.width, int(num_classes), rng, xp, dtype, bias)
        super().__init__([embedding, *blocks, head], input_shape, num_classes, xp, dtype, optimizer, lr)

    def forward(self, x):
        """Class scores (N, K) and the caches of every part. x: (N, C, H, W)."""
        embedding, *blocks, head = self.layers
        X, embed_cache = patch_embed_forward(x, embedding.W, embedding.b, self.patch)       # (MX-1)
        block_caches = []
        for block in blocks:
            X, cache = mixer_block_forward(X, block.arrays)                                  # (MX-2, MX-3)
            block_caches.append(cache)
        scores, head_cache = mixer_head_forward(X, head.W, head.b)                           # (MX-5, MX-6)
        return scores, (embed_cache, block_caches, head_cache)

    def loss_and_gradients(self, x, y):
        """The batch loss (0-d array) and one gradient dict per layer (embedding, blocks, head), each
        keyed and shaped like that layer's ``params``. x: (N, C, H, W), y: (N,)."""
        scores, (embed_cache, block_caches, head_cache) = self.forward(x)
        loss, d_scores = softmax_cross_entropy(scores, y)
        dX, dW, db = mixer_head_backward(d_scores, head_cache)
        grads = [None] * len(self.layers)
        grads[-1] = {"W": dW, "b": db}
        for i in range(len(block_caches), 0, -1):              # blocks L..1 are layers[L]..layers[1]
            # pop: block i's cache goes as soon as its backward is done (as autograd frees saved tensors)
            dX, grads[i] = mixer_block_backward(dX, block_caches.pop())
        _, dW, db = patch_embed_backward(dX, embed_cache, input_grad=False)    # the image needs no gradient
        grads[0] = {"W": dW, "b": db}
        return loss, grads


# --- Mono-Forward --------------------------------------------------------------------------------------

class MonoForwardMixerLayer:
    """One Mixer block as an MF layer: the block (and, for the first layer, the patch embedding
    before it), its projection M (K, D) and its own loss.

    ``params``: the block's arrays (minimf.nn.mixer.BLOCK_PARAMS), "M", and for the first layer
    "embed_W" (C*P*P, D) and "embed_b" (D,) or None. M is uniform in +-1/sqrt(D), like a dense
    layer from D to K (as MF's M of minimf/rules/mono_forward.py).
    """

    def __init__(self, block, num_classes, rng, xp, dtype="float32", embedding=None):
        self.block = block.arrays
        self.embedding = embedding
        width = self.block["ln1_g"].shape[0]
        bound = 1.0 / width ** 0.5
        self.M = xp.asarray(rng.uniform(-bound, bound, size=(num_classes, width)), dtype=dtype)

    @property
    def params(self):
        stem = {} if self.embedding is None else {"embed_W": self.embedding.W, "embed_b": self.embedding.b}
        return {**stem, **self.block, "M": self.M}

    def _stem_forward(self, x):
        """The block's input X_{i-1}: x itself, or for the first layer the patch embedding of the
        images x (N, C, H, W), (MX-1). Returns (X, cache or None)."""
        if self.embedding is None:
            return x, None
        return patch_embed_forward(x, self.embedding.W, self.embedding.b, self.embedding.patch)

    def forward(self, x):
        """X_i: (N, S, D) from X_{i-1}: (N, S, D) (the first layer: from images (N, C, H, W))."""
        return mixer_block_forward(self._stem_forward(x)[0], self.block)[0]

    def goodness(self, a):
        """G = mean_s(a) M^T. a: (N, S, D) -> G: (N, K)."""
        return global_avg_pool_forward(a)[0] @ self.M.T  # (5) goodness

    def local_gradients(self, x, y):
        """Forward this block and differentiate its own loss; nothing is updated.

        x: the block's input X_{i-1} (N, S, D) (the first layer: images), treated as a constant;
        y: (N,) labels. Returns (a, loss, grads): a = X_i (N, S, D) for the next block, loss a 0-d
        array, grads keyed like ``params``.
        """
        X, embed_cache = self._stem_forward(x)
        a, block_cache = mixer_block_forward(X, self.block)               # (MX-2, MX-3)
        pooled, pool_cache = global_avg_pool_forward(a)                   # (MX-5) p: (N, D)
        G = pooled @ self.M.T                                             # (5) goodness
        loss, dG = softmax_cross_entropy(G, y)                            # (6) dG = (softmax(G) - onehot(y)) / N
        dM = dG.T @ pooled                                                # (7) dL/dM = dG^T p
        da = global_avg_pool_backward(dG @ self.M, pool_cache)            # the error reaches a only through M
        # (8) backprop inside the block; the stem's gradient only where the stem is part of this layer
        dX, grads = mixer_block_backward(da, block_cache, input_grad=embed_cache is not None)
        if embed_cache is not None:
            _, dW, db = patch_embed_backward(dX, embed_cache, input_grad=False)   # stops at the image
            grads = {"embed_W": dW, "embed_b": db, **grads}
        return a, loss, {**grads, "M": dM}                                # nothing for x: the gradient stops there


class MonoForwardMixer(MixerSizes, MonoForwardModel):
    """An MLP-Mixer trained by Mono-Forward: ``depth`` blocks, each an MF layer with its own head
    M_i (K, D) on its output pooled over patches, and its own loss (module docstring).

    Training (one forward pass, each block updating as soon as the batch has passed it), prediction
    ("bp": the last block's goodness, "ff": the sum over blocks), per-block accuracy and parameter
    counts come from ``MonoForwardModel``; checks and saving from ``Network``. ``layers[0]`` holds the
    patch embedding ("embed_W", "embed_b") besides block 1.
    """

    BATCH_SPLIT = True       # each block's loss is a mean over examples, and no batch statistics
    PIPELINE = True          # the layers have MF's interface: train_layer, threads and Ray run them as they are
    UNIT_SPLIT = False       # MonoForwardNet's dense layers only
    OPTIONS = MIXER_OPTIONS

    def __init__(self, input_shape=(1, 28, 28), patch=4, width=128, token_hidden=64, channel_hidden=512, depth=4,
                 num_classes=10, backend="numpy", seed=0, bias=True, optimizer="adam", lr=1e-3, dtype="float32"):
        input_shape, xp, rng, embedding, blocks = self._trunk(input_shape, patch, width, token_hidden,
                                                              channel_hidden, depth, num_classes, backend, seed,
                                                              dtype, bias)
        layers = [MonoForwardMixerLayer(block, int(num_classes), rng, xp, dtype, embedding if i == 0 else None)
                  for i, block in enumerate(blocks)]
        super().__init__(layers, input_shape, num_classes, xp, dtype, optimizer, lr)
