"""Optimisers that update parameter arrays in place from gradients of the same names.

    opt = Adam(lr=1e-3)
    opt.step(params, grads)      # params, grads: dicts {"W": array, "b": array, ...}

A gradient that is ``None`` (a layer without bias, say) is skipped. Each optimiser keeps its
own state, so in Mono-Forward every layer has its own optimiser, as it has its own loss.

``step`` is two halves: ``start_step(grads)`` (the step counter, the state arrays) and
``update(name, p, g)`` per parameter. Every element's update reads and writes only that element,
so ``update(..., part=slice)`` may do a slice of the flattened arrays, and threads may share one
step out between them (``update_in_parallel`` in minimf/parallel.py). ``step`` itself does every parameter in turn.
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
        """Update every parameter in ``params`` (in place) from the gradient of the same name."""
        self.start_step(grads)
        for name, g in grads.items():
            if g is not None:
                self.update(name, params[name], g)

    def start_step(self, grads):
        """Begin a step: make the velocity of every parameter in ``grads`` (once, zeros)."""
        if self.momentum:
            for name, g in grads.items():
                if g is not None and name not in self.velocity:   # made once, not every step
                    self.velocity[name] = get_array_module(g).zeros_like(g)

    def update(self, name, p, g, part=None):
        """Update parameter ``name``, the array p, in place from its gradient g (after ``start_step``).
        ``part``: None for every element, or a slice of the flattened arrays (see ``flat_parts``)."""
        if self.momentum:
            p, g, v = flat_parts(part, p, g, self.velocity[name])
            v *= self.momentum
            v += g
            g = v
        else:
            p, g = flat_parts(part, p, g)
        p -= self.lr * g


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction, as in PyTorch.

    For every step, with gradient g of parameter p (the textbook form):
        t <- t + 1                          t is incremented FIRST, so the first step uses t = 1
        m <- beta1 * m + (1 - beta1) * g        (running mean of g, starts at 0)
        v <- beta2 * v + (1 - beta2) * g^2      (running mean of g^2, starts at 0)
        m_hat = m / (1 - beta1^t)               (bias correction: undoes the pull towards 0)
        v_hat = v / (1 - beta2^t)
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)   eps is added OUTSIDE the square root
    One counter t per optimiser: every parameter it owns is stepped together.

    The code computes the same update with the two corrections folded into scalars, as PyTorch
    does: with c1 = 1 - beta1^t and c2 = 1 - beta2^t,
        lr * m_hat / (sqrt(v_hat) + eps) = (lr * sqrt(c2) / c1) * m / (sqrt(v) + eps * sqrt(c2))
    (multiply numerator and denominator by sqrt(c2)). Equal up to float rounding, but m_hat and
    v_hat are never formed. Every line works IN PLACE (``out=`` and ``*=``) on m, v, p and one
    scratch array per parameter made once: a parameter of a million numbers would otherwise get
    about nine new arrays of a million numbers every step, and allocating them costs more than
    the arithmetic.
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
        self.scratch = {}

    def step(self, params, grads):
        """Update every parameter in ``params`` (in place) from the gradient of the same name."""
        self.start_step(grads)
        for name, g in grads.items():
            if g is not None:
                self.update(name, params[name], g)

    def start_step(self, grads):
        """Begin a step: t <- t + 1, this step's two scalars, and m, v (zeros) and the scratch array
        of every parameter in ``grads`` that has none yet (made once, here, so that threads
        sharing out one parameter's update never race to make them; minimf/parallel.py)."""
        self.t += 1
        root_c2 = (1 - self.beta2 ** self.t) ** 0.5                      # sqrt(c2)
        self.step_size = self.lr * root_c2 / (1 - self.beta1 ** self.t)  # lr * sqrt(c2) / c1
        self.eps_hat = self.eps * root_c2                                # eps * sqrt(c2)
        for name, g in grads.items():
            if g is not None and name not in self.m:
                xp = get_array_module(g)
                self.m[name], self.v[name], self.scratch[name] = xp.zeros_like(g), xp.zeros_like(g), xp.empty_like(g)

    def update(self, name, p, g, part=None):
        """Update parameter ``name``, the array p, in place from its gradient g, with the scalars of
        the step ``start_step`` began. ``part``: None for every element, or a slice of the
        flattened arrays (see ``flat_parts``): each element's update reads and writes only itself."""
        xp = get_array_module(g)
        p, g, m, v, s = flat_parts(part, p, g, self.m[name], self.v[name], self.scratch[name])
        m *= self.beta1                                  # m <- beta1 m + (1 - beta1) g
        xp.multiply(g, 1 - self.beta1, out=s)
        m += s
        v *= self.beta2                                  # v <- beta2 v + (1 - beta2) g^2
        xp.multiply(g, g, out=s)
        s *= 1 - self.beta2
        v += s
        xp.sqrt(v, out=s)                                # s = sqrt(v) + eps sqrt(c2)
        s += self.eps_hat
        xp.divide(m, s, out=s)                           # p <- p - step_size * m / s
        s *= self.step_size
        p -= s


def flat_parts(part, *arrays):
    """The arrays as they are (``part`` None), or the elements ``part`` (a slice) of each one
    flattened: views, so that writing to them writes the arrays. Every array must then be
    C-contiguous (a flattened view of any other would be a copy, and the update would be lost)."""
    if part is None:
        return arrays
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError(f"cannot update part of a non-contiguous array of shape {a.shape}")
    return tuple(a.reshape(-1)[part] for a in arrays)


def make_optimizer(name, lr):
    """``"adam"`` or ``"sgd"`` by name, with learning rate ``lr``."""
    if name == "adam":
        return Adam(lr=lr)
    if name == "sgd":
        return SGD(lr=lr)
    raise ValueError(f"unknown optimizer {name!r}: choose adam or sgd")
