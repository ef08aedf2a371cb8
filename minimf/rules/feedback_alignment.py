"""Feedback Alignment (FA; Lillicrap, Cownden, Tweed & Akerman 2016, "Random synaptic feedback
weights support error backpropagation for deep learning", Nature Communications 7, 13276).

Backprop sends the error down through the transposed forward weights. FA sends it down through a
FIXED RANDOM matrix B_i of the same shape as W_i instead:

    ds = (softmax(s) - onehot(y)) / N                 the output error, as in BP
    dW_out = a_L^T ds,   db_out = sum_n ds            the true gradient
    da_L = ds B_out^T                                 (BP: ds W_out^T)
    dz_i = da_i * 1[z_i > 0],   dW_i = a_{i-1}^T dz_i,   db_i = sum_n dz_i
    da_{i-1} = dz_i B_i^T                             (BP: dz_i W_i^T), not for the first layer

Everything else is BP's: the forward pass, the loss, the formulas for dW and db. B_i never
learns. The hidden layers' updates are then no gradient of any loss, and yet they reduce it: at
the start they stand at about 90 degrees to the true gradient, but the forward weights come to
"align" with the feedback, and after some steps the update points downhill (its cosine to BP's
gradient rises from about 0 to clearly positive: tests/test_feedback_alignment.py). The output
layer's update is the true gradient, because no feedback matrix is involved in it.

In the code, FA is BP's backward pass run on caches in which the forward weights are replaced by
the feedback ones. ``dense_backward`` computes dx = dz W^T from the W in its cache, and dW = x^T dz,
db = sum_n dz without reading W; so ``forward`` returns BP's caches with B_i where W_i was, and
BP's own ``loss_and_gradients`` yields FA's updates. With B_i = W_i, FA is BP (a test checks it).

The CNN: a conv block's B_i is a random kernel of W_i's shape (F, C, 3, 3); the block's input
gradient is the transposed convolution with B_i instead of W_i (im2col: dcols = B_i^T d, then
col2im), after BP's backward through the pooling and the ReLU. The output layer gets B_out.

``feedback[i]`` belongs to ``layers[i]`` and has W_i's shape; ``feedback[0]`` is None, because the
first layer sends no error down (its input needs no gradient). The feedback is drawn uniformly
in ±1/sqrt(fan_in), like the forward weights, from its own stream of the seed, so that an FA
network starts from the same forward weights as a BP network with the same seed. It is saved
with the parameters ("feedback.i") but not counted by ``num_parameters``: it is used in training
only.
"""
from minimf.backend import make_rng, to_numpy
from minimf.rules.backprop import BackpropCNN, BackpropNet
from minimf.nn.cnn import KERNEL

FEEDBACK_STREAM = 1   # the feedback's generator is make_rng((seed, FEEDBACK_STREAM)): not the weights'


def random_feedback(rng, shape, fan_in, xp, dtype):
    """A fixed random matrix of ``shape``, uniform in ±1/sqrt(fan_in), drawn on the host."""
    bound = 1.0 / fan_in ** 0.5
    return xp.asarray(rng.uniform(-bound, bound, size=shape), dtype=dtype)


def feedback_rng(seed):
    """The host generator of the feedback matrices: seeded by (seed, 1), independent of the
    generator of the forward weights (seeded by seed)."""
    return make_rng((seed, FEEDBACK_STREAM))


def dense_cache_with(cache, B):
    """BP's dense cache (x, W, has_bias) with B in W's place: ``dense_backward`` then returns
    dx = dz B^T, and dW, db as before."""
    x, _, has_bias = cache
    return x, B, has_bias


def conv_block_cache_with(cache, B):
    """BP's conv block cache with the kernel B in W's place: ``conv_block_backward`` then returns
    the transposed convolution of dz with B as dx, and dW, db as before."""
    (x_shape, cols, _, has_bias, stride, pad), relu_cache, pool_cache, pool = cache
    return (x_shape, cols, B, has_bias, stride, pad), relu_cache, pool_cache, pool


class RandomFeedback:
    """Saving and loading for networks with fixed random ``feedback`` matrices (FA, DFA, PEPITA):
    the parameters as the base class saves them, plus "feedback.i" for every matrix."""

    def state_dict(self):
        state = super().state_dict()
        state.update({f"feedback.{i}": to_numpy(B).copy() for i, B in enumerate(self.feedback) if B is not None})
        return state

    def load_state_dict(self, state):
        """The base class loads the parameters (every array but "feedback.i"), then the matrices."""
        super().load_state_dict({key: a for key, a in state.items() if not key.startswith("feedback.")})
        for i, B in enumerate(self.feedback):
            if B is None:
                continue
            key = f"feedback.{i}"
            if key not in state:
                raise ValueError(f"saved state has no array {key!r}")
            if tuple(state[key].shape) != tuple(B.shape):
                raise ValueError(f"saved {key} has shape {tuple(state[key].shape)}, the network expects {tuple(B.shape)}")
            B[...] = self.xp.asarray(state[key])


class FeedbackAlignmentNet(RandomFeedback, BackpropNet):
    """BP's MLP (``sizes = [D, H_1, ..., H_L]``, output layer H_L -> C), trained by FA.

    ``feedback[i]``: (D_i, H_i) like ``layers[i].W`` for i >= 1 (the output layer's (H_L, C)
    last); ``feedback[0]`` is None. Same constructor, methods and parameter count as BackpropNet.
    """

    def __init__(self, sizes=(784, 1000, 1000), num_classes=10, backend="numpy", seed=0,
                 bias=True, optimizer="adam", lr=1e-3, dtype="float32"):
        super().__init__(sizes, num_classes, backend, seed, bias, optimizer, lr, dtype)
        rng = feedback_rng(seed)
        self.feedback = [None] + [random_feedback(rng, layer.W.shape, layer.W.shape[0], self.xp, dtype)
                                  for layer in self.layers[1:]]

    def forward(self, x):
        """BP's forward pass; the caches carry B_i where BP's carry W_i (see the module docstring)."""
        scores, caches = super().forward(x)
        return scores, [(dense_cache if B is None else dense_cache_with(dense_cache, B), relu_cache)
                        for (dense_cache, relu_cache), B in zip(caches, self.feedback)]


class FeedbackAlignmentCNN(RandomFeedback, BackpropCNN):
    """BP's CNN (conv blocks ``channels``, then a dense output layer), trained by FA.

    ``feedback[i]``: a kernel (F_i, C_i, 3, 3) like ``layers[i].W`` for the blocks i >= 1, and
    (F_L*H_L*W_L, C) for the output layer (last); ``feedback[0]`` is None.
    """

    def __init__(self, input_shape=(1, 28, 28), channels=(64, 128, 256, 512), num_classes=10,
                 backend="numpy", seed=0, bias=True, optimizer="adam", lr=1e-3, dtype="float32",
                 pool="avg"):
        super().__init__(input_shape, channels, num_classes, backend, seed, bias, optimizer, lr, dtype, pool)
        rng = feedback_rng(seed)
        blocks = [random_feedback(rng, layer.W.shape, layer.W.shape[1] * KERNEL * KERNEL, self.xp, dtype)
                  for layer in self.layers[1:-1]]
        out = self.layers[-1].W
        self.feedback = [None] + blocks + [random_feedback(rng, out.shape, out.shape[0], self.xp, dtype)]

    def forward(self, x):
        """BP's forward pass; the caches carry B_i where BP's carry W_i (see the module docstring)."""
        scores, (block_caches, shape, dense_cache) = super().forward(x)
        block_caches = [cache if B is None else conv_block_cache_with(cache, B)
                        for cache, B in zip(block_caches, self.feedback)]
        return scores, (block_caches, shape, dense_cache_with(dense_cache, self.feedback[-1]))
