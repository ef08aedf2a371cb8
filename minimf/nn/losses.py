"""Softmax and cross-entropy, computed through log-sum-exp so that large scores cannot overflow;
and the logistic function and softplus, the two halves of Forward-Forward's binary loss.

Shape letters: N batch size, C classes. ``logits`` are any scores (N, C); in Mono-Forward they
are a layer's goodness G, in backprop the output layer's z.

Two paths compute the cross-entropy and its gradient, as two compute an optimiser's step
(minimf/nn/optim.py). On NumPy, ``reference_softmax_cross_entropy``: readable whole-array code.
On CuPy, ``fused_softmax_cross_entropy``: the same numbers in two kernel launches, where the
whole-array code launches about 25 (a max, a subtraction, an exponential, a sum, a logarithm, a
gather of four kernels, a scatter of nine, ...: benchmarks/launch_model.py counts them). On a GPU
each launch costs the host microseconds, and for C = 10 classes the arithmetic costs less than
that. tests/test_losses.py holds the fused path to the reference in float64 and float32.
"""
import types

import numpy

from minimf.backend import get_array_module, kernels_for

ROW_KERNEL_MAX_CLASSES = 32   # above this, C arrays per example make the kernel's arguments too many


def log_softmax(logits):
    """``log softmax(s)_c = s_c - log sum_k exp(s_k)``, row by row, stably.

    Subtracting the row maximum m first changes nothing mathematically
    (log sum_k exp(s_k) = m + log sum_k exp(s_k - m)) but keeps every exponent <= 0,
    so exp never overflows, even for scores of 1e3.
    logits: (N, C) -> (N, C)
    """
    xp = get_array_module(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits):
    """Row-wise softmax probabilities (N, C), each row summing to 1."""
    xp = get_array_module(logits)
    return xp.exp(log_softmax(logits))


def softmax_cross_entropy(logits, y):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient.

    L = -(1/N) sum_n log softmax(s_n)_{y_n}
    dL/ds = (softmax(s) - onehot(y)) / N

    logits: (N, C) float   y: (N,) integers in [0, C)
    Returns (loss, dlogits): loss a 0-d array (call ``float`` only to log it), dlogits (N, C).
    NumPy takes ``reference_softmax_cross_entropy``, CuPy ``fused_softmax_cross_entropy`` (up to
    ROW_KERNEL_MAX_CLASSES classes).
    """
    xp = get_array_module(logits)
    if xp is numpy or logits.shape[1] > ROW_KERNEL_MAX_CLASSES:
        return reference_softmax_cross_entropy(logits, y)
    return fused_softmax_cross_entropy(logits, y)


def reference_softmax_cross_entropy(logits, y):
    """``softmax_cross_entropy`` in whole-array operations (any xp)."""
    xp = get_array_module(logits)
    n = logits.shape[0]
    rows = xp.arange(n)
    log_p = log_softmax(logits)
    loss = -log_p[rows, y].mean()
    dlogits = xp.exp(log_p)        # softmax(s)
    dlogits[rows, y] -= 1          # softmax(s) - onehot(y): each row is hit once, so no scatter-add
    dlogits /= n
    return loss, dlogits


def fused_softmax_cross_entropy(logits, y):
    """``softmax_cross_entropy`` in two kernels: one thread per example computes its C gradients and
    its share of the loss (``softmax_cross_entropy_rows``), then one sum adds the shares up.

    The kernel reads the logits as C columns, ``logits[:, c]`` (views: nothing is copied), so each
    thread sees its example's C scores as C numbers and never needs an index; it writes the
    columns of dlogits the same way. The one-hot of y is never built: each thread compares its
    label with c.
    """
    xp = get_array_module(logits)
    n, num_classes = logits.shape
    dlogits = xp.empty_like(logits)
    row_losses = xp.empty(n, dtype=logits.dtype)
    columns = [logits[:, c] for c in range(num_classes)] + [dlogits[:, c] for c in range(num_classes)]
    kernels_for(xp, _make_kernels).softmax_cross_entropy_rows(y, logits.dtype.type(n), *columns, row_losses)
    return row_losses.sum(), dlogits


def _make_kernels(xp):
    """The loss's fused kernel for the array module ``xp`` (``xp.fuse``, as minimf/nn/optim.py's)."""
    exp, log, maximum = xp.exp, xp.log, xp.maximum     # inside cupy.fuse a ufunc joins the kernel

    def softmax_cross_entropy_rows(y, n, *columns):
        """For one example: its label y, the batch size n, then C scores s_c, C gradient outputs
        d_c and a loss output, each one number. The Python loops over c run while CuPy traces the
        function, so the kernel holds C copies of each line and no loop."""
        num_classes = (len(columns) - 1) // 2
        scores, grads, row_loss = columns[:num_classes], columns[num_classes:-1], columns[-1]
        m = scores[0]                                     # m = max_c s_c, so every exp(s_c - m) <= 1
        for s in scores[1:]:
            m = maximum(m, s)
        total = exp(scores[0] - m)
        for s in scores[1:]:
            total = total + exp(s - m)
        log_total = log(total)                            # log sum_c exp(s_c - m)
        label_log_p = 0
        for c, (s, d) in enumerate(zip(scores, grads)):
            log_p = (s - m) - log_total                   # log softmax(s)_c
            is_label = y == c                             # onehot(y)_c
            d[...] = (exp(log_p) - is_label) / n          # (softmax(s)_c - onehot(y)_c) / N
            label_log_p = label_log_p + log_p * is_label  # log softmax(s)_y, the other terms are 0
        row_loss[...] = -label_log_p / n                  # this example's share of L

    return types.SimpleNamespace(softmax_cross_entropy_rows=xp.fuse()(softmax_cross_entropy_rows))


def softplus(t):
    """``log(1 + exp(t))`` element-wise, stably: ``max(t, 0) + log(1 + exp(-|t|))``.

    The two forms are equal (for t > 0 take exp(t) out of the sum), but the second never
    exponentiates a positive number, so softplus(1e3) is 1e3 and not inf. softplus(-t) is
    -log sigmoid(t): the logistic loss of a score t whose target is "yes".
    """
    xp = get_array_module(t)
    return xp.maximum(t, 0) + xp.log1p(xp.exp(-xp.abs(t)))


def sigmoid(t):
    """``1 / (1 + exp(-t))`` element-wise, stably, as ``exp(-softplus(-t))``; the derivative of
    softplus(t)."""
    xp = get_array_module(t)
    return xp.exp(-softplus(-t))


def count_correct(scores, y):
    """How many rows have their largest score at the true label: a 0-d array on the backend, so
    that an evaluation can add the counts of all its batches up on the device and read them once.

    scores: (N, C), y: (N,) integers.
    """
    return (scores.argmax(axis=1) == y).sum()
