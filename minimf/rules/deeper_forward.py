"""DeeperForward's goodness (Sun et al., ICLR 2025, "DeeperForward: Enhanced Forward-Forward Training
for Deeper and Better Performance") as a read-out for Mono-Forward's conv blocks.

MF v1 reads a block out through a learned projection, G = flat(a) M^T (``ProjectionReadout``).
DeeperForward needs no read-out parameters at all: the F channels of a block are split into C
groups of K = F / C consecutive channels, one group per class, and a class's goodness is the MEAN
activation of its group over channels and positions:

    G[n, c] = 1/(K H' W') sum_{k < K, i < H', j < W'} a[n, c K + k, i, j]       (DF-1) mean goodness
    L = -(1/N) sum_n log softmax(G)_{n, y_n}                                    (6), unchanged
    dL/da[n, c K + k, i, j] = dG[n, c] / (K H' W')                              (DF-2)

so the block must learn to light up the channels of the true class and keep the others dark; the
gradient reaches W through the pooling and the ReLU and stops at the block input, as in MF.

Normalisation between layers. With mean goodness, a block's goodness is carried by the mean (and
size) of its output; if the next block saw the output as it is, it could read the class off that
mean and learn nothing new. DeeperForward therefore layer-normalises what passes from one layer to
the next (per example, over all channels and positions, no learned scale or shift):

    x^ = (x - mean(x)) / sqrt(var(x) + eps),   mean and var over (C, H, W) of each example   (DF-3)

(``layer_norm``, minimf/nn/norm.py). ``block_input`` applies it to every block's input (for the
first block, a per-image standardisation of the image). No gradient flows through it: MF stops the
gradient at the input.

Prediction: DeeperForward sums the goodness of a range of layers (the deepest ones); MF's "ff"
mode sums all of them and ``range_scores`` any contiguous range.

Published (4-layer CNN, their own training recipe): MNIST 99.50%, Fashion-MNIST 91.83%,
CIFAR-10 79.49%. Not here: their 17-layer networks, the model-parallel pipeline, augmentation.

Shape letters: N batch, F channels of the block, H' x W' its output size, C classes, K = F / C.
"""
from minimf.backend import get_array_module
from minimf.nn.norm import layer_norm   # (DF-3); lessons/12 imports it from here too


class ChannelGroupReadout:
    """Mean goodness over one channel group per class (DF-1); no parameters.

    ``out_shape`` (F, H', W') is the block's output for one example; F must be divisible by C.
    Same interface as ``ProjectionReadout``: ``params``, ``goodness``, ``backward``, ``block_input``.
    """

    def __init__(self, out_shape, num_classes, rng=None, xp=None, dtype="float32"):
        F = out_shape[0]
        if F % num_classes:
            raise ValueError(f"channel-group read-out: the block's {F} channels cannot be split into "
                             f"{num_classes} equal groups (one per class); use a multiple of {num_classes}")
        self.num_classes = int(num_classes)

    @property
    def params(self):
        return {}

    def block_input(self, x):
        """The block's input, layer-normalised (DF-3). x: (N, C, H, W)."""
        return layer_norm(x)

    def goodness(self, a):
        """(DF-1) G: (N, C), the mean of each class's channel group. a: (N, F, H', W')."""
        N, F, H, W = a.shape
        return a.reshape(N, self.num_classes, F // self.num_classes, H, W).mean(axis=(2, 3, 4))

    def backward(self, dG, a):
        """(DF-2) da: (N, F, H', W'), every entry of group c receiving dG[:, c] / (K H' W'); no parameters."""
        xp = get_array_module(dG)
        N, F, H, W = a.shape
        K = F // self.num_classes
        share = dG[:, :, None, None, None] / (K * H * W)                 # (N, C, 1, 1, 1)
        return xp.broadcast_to(share, (N, self.num_classes, K, H, W)).reshape(a.shape), {}


def range_scores(goodness, start=0, stop=None):
    """Sum of the goodness of layers ``start`` .. ``stop - 1`` (Python slice rules): (N, C).

    ``goodness`` is the list [G_1, ..., G_L] of ``MonoForwardModel.goodness(x)``.
    """
    chosen = goodness[start:stop]
    if not chosen:
        raise ValueError(f"no layers in range [{start}, {stop}) of {len(goodness)}")
    return sum(chosen)
