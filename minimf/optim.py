"""Optimisers that update parameter arrays in place from gradients of the same names.

    opt = Adam(lr=1e-3)
    opt.step(params, grads)      # params, grads: dicts {"W": array, "b": array, ...}

A gradient that is ``None`` (a layer without bias, say) is skipped. Each optimiser keeps its
own state, so in Mono-Forward every layer has its own optimiser, as it has its own loss.
"""
from minimf.backend import get_array_module


class SGD:
    """Stochastic gradient descent, with optional (heavy-ball) momentum.

    Without momentum: p <- p - lr * g.
    With momentum mu: v <- mu * v + g;  p <- p - lr * v   (PyTorch's convention, v starts at 0).
    """

    def __init__(self, lr=0.01, momentum=0.0):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.lr = lr
        self.momentum = momentum
        self.velocity = {}

    def step(self, params, grads):
        for name, g in grads.items():
            if g is None:
                continue
            if self.momentum:
                xp = get_array_module(g)
                v = self.velocity.setdefault(name, xp.zeros_like(g))
                v *= self.momentum
                v += g
                g = v
            params[name] -= self.lr * g


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction, as in PyTorch.

    For every step, with gradient g of parameter p:
        t <- t + 1                          t is incremented FIRST, so the first step uses t = 1
        m <- beta1 * m + (1 - beta1) * g        (running mean of g, starts at 0)
        v <- beta2 * v + (1 - beta2) * g^2      (running mean of g^2, starts at 0)
        m_hat = m / (1 - beta1^t)               (bias correction: undoes the pull towards 0)
        v_hat = v / (1 - beta2^t)
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)   eps is added OUTSIDE the square root
    One counter t per optimiser: every parameter it owns is stepped together.
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {beta1}, {beta2}")
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.t = 0
        self.m = {}
        self.v = {}

    def step(self, params, grads):
        self.t += 1
        correction1 = 1 - self.beta1 ** self.t
        correction2 = 1 - self.beta2 ** self.t
        for name, g in grads.items():
            if g is None:
                continue
            xp = get_array_module(g)
            m = self.m.setdefault(name, xp.zeros_like(g))
            v = self.v.setdefault(name, xp.zeros_like(g))
            m *= self.beta1
            m += (1 - self.beta1) * g
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            m_hat = m / correction1
            v_hat = v / correction2
            params[name] -= self.lr * m_hat / (xp.sqrt(v_hat) + self.eps)


def make_optimizer(name, lr):
    """``"adam"`` or ``"sgd"`` by name, with learning rate ``lr``."""
    if name == "adam":
        return Adam(lr=lr)
    if name == "sgd":
        return SGD(lr=lr)
    raise ValueError(f"unknown optimizer {name!r}: choose adam or sgd")
