"""Softmax and cross-entropy, computed through log-sum-exp so that large scores cannot overflow;
and the logistic function and softplus, the two halves of Forward-Forward's binary loss.

Shape letters: N batch size, C classes. ``logits`` are any scores (N, C); in Mono-Forward they
are a layer's goodness G, in backprop the output layer's z.
"""
from minimf.backend import get_array_module


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
    """
    xp = get_array_module(logits)
    n = logits.shape[0]
    rows = xp.arange(n)
    log_p = log_softmax(logits)
    loss = -log_p[rows, y].mean()
    dlogits = xp.exp(log_p)        # softmax(s)
    dlogits[rows, y] -= 1          # softmax(s) - onehot(y): each row is hit once, so no scatter-add
    dlogits /= n
    return loss, dlogits


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
