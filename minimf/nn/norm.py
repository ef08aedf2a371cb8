"""Layer normalisation without learned parameters: every example shifted to mean 0 and scaled to
variance 1 over all its own numbers (features, or channels and positions).

    x^ = (x - mean(x)) / sqrt(var(x) + eps),   mean and var over all axes but the first   (DF-3)

DeeperForward (minimf/rules/deeper_forward.py) applies it to what passes from one conv block to the
next, Scalable Forward-Forward to every block's input, and Mono-Forward to every dense layer's input
with ``input_norm="layer"``. In all three the gradient stops at the layer's input, so none of them
needs its backward pass: x^ is a function of that input alone, a constant to the layer's loss.

Shape letters: N batch; an example may have any shape, (D,) or (C, H, W).
"""
from minimf.backend import get_array_module

EPS = 1e-5


def layer_norm(x, eps=EPS):
    """(DF-3) x: (N, ...) -> each example shifted to mean 0 and scaled to variance 1 (eps added to
    the variance), over all its numbers: (N, D) over D, (N, C, H, W) over C, H and W."""
    xp = get_array_module(x)
    axes = tuple(range(1, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / xp.sqrt(var + eps)
