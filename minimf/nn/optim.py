"""Optimisers that update parameter arrays in place from gradients of the same names.

    opt = Adam(lr=1e-3)                          # or Adam(schedule=Cosine(1e-3, total_steps))
    opt.step(params, grads)      # params, grads: dicts {"W": array, "b": array, ...}

Every optimiser owns its learning-rate schedule (minimf/nn/schedules.py) and counts its steps t:
step t is taken at rate ``schedule(t)`` (``lr`` alone means a constant rate). Nothing outside the
optimiser sets its rate, so a pipeline's layer, a Ray actor and a resumed run take the rate the
uninterrupted run takes, from the step count in the optimiser's state.

A gradient that is ``None`` (a layer without bias, say) is skipped. Each optimiser keeps its
own state, so in Mono-Forward every layer has its own optimiser, as it has its own loss.

``step`` is two halves: ``start_step(grads)`` (the step counter, the state arrays) and
``update(name, p, g)`` per parameter. Every element's update reads and writes only that element,
so ``update(..., part=slice)`` may do a slice of the flattened arrays, and threads may share one
step out between them (``update_in_parallel`` in minimf/parallel/threads.py). ``step`` itself does every parameter in turn.

Two paths compute every update. On NumPy, ``reference_update``: readable in-place NumPy, one pass
over the arrays per operation, done piece by piece (``cache_pieces``, minimf/nn/pieces.py): Adam's
12 passes over a million-number weight matrix would each stream it from main memory, while 12 passes
over a piece of CACHE_PIECE numbers run in the CPU's cache, so the memory is read and written about
once. The numbers are the same, element for element. On CuPy, ``fused_update``: the same arithmetic in ONE fused
element-wise kernel per parameter (``cupy.fuse``, see ``fused_kernels``), because on a GPU a small
layer's step costs its kernel launches (several microseconds each), not its arithmetic. The tests
hold the fused path to the reference (tests/test_optim.py).
"""
import types

import numpy

from minimf.backend import get_array_module, kernels_for, to_numpy
from minimf.nn.flat import FlatParameters
from minimf.nn.pieces import cache_pieces, flat_parts
from minimf.nn.schedules import Constant


class SGD:
    """Stochastic gradient descent, with optional (heavy-ball) momentum.

    Without momentum: p <- p - lr * g.
    With momentum mu: v <- mu * v + g;  p <- p - lr * v   (PyTorch's convention, v starts at 0).

    On NumPy ``reference_update`` does it in two to four in-place passes; on CuPy ``fused_update``
    in one fused kernel per parameter (module docstring).
    """

    def __init__(self, lr=0.01, momentum=0.0, schedule=None):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.schedule = Constant(lr) if schedule is None else schedule
        self.t = 0                          # steps taken
        self.lr = self.schedule(0)          # the rate of the step in progress (set by start_step)
        self.momentum = momentum
        self.velocity = {}
        self.flat_arrays = {}               # step_flat's flat velocity, by name of state (flat_state)

    def step(self, params, grads):
        """Update every parameter in ``params`` (in place) from the gradient of the same name."""
        self.start_step(grads)
        for name, g in grads.items():
            if g is not None:
                self.update(name, params[name], g)

    def step_flat(self, flat):
        """``step(flat.params, flat.grads)`` in one pass over a layer's flat arrays (``FlatParameters``,
        minimf/nn/flat.py), the velocity flat too: one kernel on CuPy for the whole layer."""
        self.start_step(flat.grads)
        arrays = (flat.values, flat.grad) + ((flat_state(self, "velocity", flat),) if self.momentum else ())
        if get_array_module(flat.grad) is numpy:
            self.reference_update(*arrays)
        else:
            self.fused_update(*arrays)

    def state_dict(self):
        """(scalars, arrays): what a checkpoint needs to continue exactly (minimf/checkpoint.py):
        the step count t and the momentum, and the velocity of every parameter as host arrays.
        (The rate of step t is the schedule's, which the run's configuration gives.)"""
        return ({"kind": "sgd", "t": self.t, "momentum": self.momentum},
                {f"velocity.{name}": to_numpy(v).copy() for name, v in self.velocity.items()})

    def load_state_dict(self, scalars, arrays, xp):
        """Restore ``state_dict``'s state; the arrays go to ``xp``."""
        _check_kind(scalars, "sgd")
        self.t, self.momentum = scalars.get("t"), scalars["momentum"]   # t: None in states saved before it was
        self.velocity = {key.split(".", 1)[1]: xp.asarray(a) for key, a in arrays.items()}
        self.flat_arrays = {}

    def start_step(self, grads):
        """Begin a step: this step's rate, schedule(t), then t <- t + 1; and the velocity of every
        parameter in ``grads`` (once, zeros)."""
        self.lr = self.schedule(self.t)
        self.t += 1
        if self.momentum:
            for name, g in grads.items():
                if g is not None and name not in self.velocity:   # made once, not every step
                    self.velocity[name] = get_array_module(g).zeros_like(g)

    def update(self, name, p, g, part=None):
        """Update parameter ``name``, the array p, in place from its gradient g (after ``start_step``).
        ``part``: None for every element, or a slice of the flattened arrays (see ``flat_parts``)."""
        state = (self.velocity[name],) if self.momentum else ()
        if get_array_module(g) is numpy:
            arrays = (p, g, *state)
            for piece in cache_pieces(part, arrays):
                self.reference_update(*flat_parts(piece, *arrays))
        else:
            self.fused_update(*flat_parts(part, p, g, *state))

    def reference_update(self, p, g, v=None):
        """The update in readable in-place array code (any xp); v: the velocity (momentum only)."""
        if v is not None:
            v *= self.momentum
            v += g
            g = v
        p -= self.lr * g

    def fused_update(self, p, g, v=None):
        """The update as one fused kernel (CuPy; arrays as ``reference_update``'s)."""
        kernels, dt = fused_kernels(get_array_module(g)), p.dtype.type   # scalars in p's dtype
        if v is None:
            kernels.sgd(p, g, dt(self.lr))
        else:
            kernels.momentum(p, g, v, dt(self.momentum), dt(self.lr))


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
    v_hat are never formed.

    On NumPy (``reference_update``) every line works IN PLACE (``out=`` and ``*=``) on m, v, p and
    one scratch array per parameter made once: a parameter of a million numbers would otherwise
    get about nine new arrays of a million numbers every step, and allocating them costs more than
    the arithmetic. That is 12 element-wise passes per parameter.

    On CuPy (``fused_update``) the same arithmetic, in the same order, is ONE kernel per parameter
    (``cupy.fuse``, ``fused_kernels``): each thread reads g, m, v, p of its element once, and writes
    m, v, p back. On a GPU the 12 passes would be 12 kernel launches of a few microseconds each, and
    for a small layer (a bias, a 1000 x 10 projection) those launches, not the arithmetic or the
    memory traffic, are the step's time. The scalars go in as numbers of p's dtype (float32 stays
    float32), and no scratch array is needed there.
    """

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, schedule=None):
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"betas must be in [0, 1), got {beta1}, {beta2}")
        self.schedule = Constant(lr) if schedule is None else schedule
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.t = 0                          # steps taken
        self.lr = self.schedule(0)          # the rate of the step in progress (set by start_step)
        self.m = {}
        self.v = {}
        self.scratch = {}
        self.flat_arrays = {}                # step_flat's flat m, v (and scratch), made once

    def step(self, params, grads):
        """Update every parameter in ``params`` (in place) from the gradient of the same name."""
        self.start_step(grads)
        for name, g in grads.items():
            if g is not None:
                self.update(name, params[name], g)

    def step_flat(self, flat):
        """``step(flat.params, flat.grads)`` in one pass over a layer's flat arrays (``FlatParameters``,
        minimf/nn/flat.py), m and v flat too: ONE kernel on CuPy for the whole layer, and 12 passes
        over one array instead of 12 per parameter on NumPy. The numbers are ``step``'s, bit for bit
        (every element's update reads only that element)."""
        self.start_step(flat.grads)
        m, v = flat_state(self, "m", flat), flat_state(self, "v", flat)
        if get_array_module(flat.grad) is numpy:
            self.reference_update(flat.values, flat.grad, m, v, flat_state(self, "scratch", flat))
        else:
            self.fused_update(flat.values, flat.grad, m, v)

    def state_dict(self):
        """(scalars, arrays): what a checkpoint needs to continue exactly (minimf/checkpoint.py):
        the step count t and the hyper-parameters, and m and v of every parameter as host arrays.
        (The scratch arrays hold nothing between steps; the rate of step t is the schedule's.)"""
        scalars = {"kind": "adam", "t": self.t, "beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}
        arrays = {f"{which}.{name}": to_numpy(a).copy()
                  for which, state in (("m", self.m), ("v", self.v)) for name, a in state.items()}
        return scalars, arrays

    def load_state_dict(self, scalars, arrays, xp):
        """Restore ``state_dict``'s state; the arrays go to ``xp`` (and the scratch arrays are made again)."""
        _check_kind(scalars, "adam")
        self.t, self.beta1, self.beta2, self.eps = (scalars[k] for k in ("t", "beta1", "beta2", "eps"))
        self.m, self.v, self.scratch, self.flat_arrays = {}, {}, {}, {}
        for key, a in arrays.items():
            which, name = key.split(".", 1)
            getattr(self, which)[name] = xp.asarray(a)
        if xp is numpy:
            self.scratch = {name: xp.empty_like(m) for name, m in self.m.items()}

    def start_step(self, grads):
        """Begin a step: this step's rate, schedule(t), then t <- t + 1, this step's two scalars, and
        m, v (zeros) and, on NumPy, the scratch array of every parameter in ``grads`` that has none
        yet (made once, here, so that threads sharing out one parameter's update never race to make
        them; minimf/parallel/threads.py)."""
        self.lr = self.schedule(self.t)
        self.t += 1
        root_c2 = (1 - self.beta2 ** self.t) ** 0.5                      # sqrt(c2)
        self.step_size = self.lr * root_c2 / (1 - self.beta1 ** self.t)  # lr * sqrt(c2) / c1
        self.eps_hat = self.eps * root_c2                                # eps * sqrt(c2)
        for name, g in grads.items():
            if g is not None and name not in self.m:
                xp = get_array_module(g)
                self.m[name], self.v[name] = xp.zeros_like(g), xp.zeros_like(g)
                if xp is numpy:                                          # the fused kernel needs none
                    self.scratch[name] = xp.empty_like(g)

    def update(self, name, p, g, part=None):
        """Update parameter ``name``, the array p, in place from its gradient g, with the scalars of
        the step ``start_step`` began. ``part``: None for every element, or a slice of the
        flattened arrays (see ``flat_parts``): each element's update reads and writes only itself."""
        if get_array_module(g) is numpy:
            arrays = (p, g, self.m[name], self.v[name], self.scratch[name])
            for piece in cache_pieces(part, arrays):
                self.reference_update(*flat_parts(piece, *arrays))
        else:
            self.fused_update(*flat_parts(part, p, g, self.m[name], self.v[name]))

    def reference_update(self, p, g, m, v, s):
        """The update in readable in-place array code (any xp): 12 element-wise passes over p (its
        gradient g, its state m and v) with s, a scratch array of their shape."""
        xp = get_array_module(g)
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

    def fused_update(self, p, g, m, v):
        """The update as one fused kernel (CuPy; arrays as ``reference_update``'s, no scratch)."""
        dt = p.dtype.type                                # the scalars in p's dtype: float32 stays float32
        fused_kernels(get_array_module(g)).adam(p, g, m, v, dt(self.beta1), dt(1 - self.beta1), dt(self.beta2),
                                                 dt(1 - self.beta2), dt(self.step_size), dt(self.eps_hat))


def fused_kernels(xp):
    """The optimisers' fused element-wise kernels for the array module ``xp`` (CuPy), made on first use.

    Each is a plain Python function of arrays and scalars, wrapped by ``xp.fuse()``: CuPy traces
    it once per dtype and ndim into one CUDA kernel, in which an augmented assignment on an
    argument (``m *= beta1``) writes that array in place (the strict stand-in traces it as CuPy
    does, refusing Python control flow on fused values, and counts one launch). The arithmetic is ``reference_update``'s, operation for operation, so that the two
    round alike (a GPU may still contract a multiply and an add into one fused multiply-add).
    """
    return kernels_for(xp, _make_kernels)       # made once per array module (minimf/backend.py)


def _make_kernels(xp):
    """SGD, SGD with momentum and Adam, each fused (``fused_kernels``)."""
    sqrt = xp.sqrt                                       # inside cupy.fuse a ufunc joins the kernel

    def sgd(p, g, lr):                                   # p <- p - lr g
        p -= lr * g

    def momentum(p, g, v, mu, lr):                       # v <- mu v + g;  p <- p - lr v
        v *= mu
        v += g
        p -= lr * v

    def adam(p, g, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, eps_hat):
        m *= beta1                                       # m <- beta1 m + (1 - beta1) g
        m += g * one_minus_beta1
        v *= beta2                                       # v <- beta2 v + (1 - beta2) g^2
        v += g * g * one_minus_beta2
        p -= m / (sqrt(v) + eps_hat) * step_size         # p <- p - step_size m / (sqrt(v) + eps sqrt(c2))

    fuse = xp.fuse
    return types.SimpleNamespace(sgd=fuse()(sgd), momentum=fuse()(momentum), adam=fuse()(adam))


def flat_state(optimizer, which, flat):
    """The optimiser's state ``which`` ("m", "v", "velocity", "scratch": a dict {name: array}) for
    every parameter of ``flat`` (minimf/nn/flat.py) as one flat array laid out as ``flat.values``.
    Made on the first call, from the arrays the state holds (zeros from ``start_step``, or those
    ``load_state_dict`` restored), whose entries then become views of it; kept until
    ``load_state_dict`` replaces the state."""
    if which not in optimizer.flat_arrays:
        state = getattr(optimizer, which)
        laid_out = FlatParameters({name: None if g is None else state[name] for name, g in flat.grads.items()},
                                  get_array_module(flat.grad), grad=False)
        state.update({name: a for name, a in laid_out.params.items() if a is not None})
        optimizer.flat_arrays[which] = laid_out.values
    return optimizer.flat_arrays[which]


def _check_kind(scalars, kind):
    if scalars.get("kind") != kind:
        raise ValueError(f"the saved optimiser state is {scalars.get('kind')!r}, this optimiser is {kind!r}")


def make_optimizer(name, lr, schedule=None):
    """``"adam"`` or ``"sgd"`` by name, with learning rate ``lr`` (or the rate of ``schedule``)."""
    if name == "adam":
        return Adam(lr=lr, schedule=schedule)
    if name == "sgd":
        return SGD(lr=lr, schedule=schedule)
    raise ValueError(f"unknown optimizer {name!r}: choose adam or sgd")
