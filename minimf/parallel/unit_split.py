"""Mono-Forward with every dense layer's units shared out between threads: the layer's own parallelism.

A Mono-Forward layer needs nothing from the layers above it, and inside the layer its H units
hardly need each other. Split the units into parts, unit columns ``u`` of W, b and M (each part
about H / T of them, T threads)::

    z[:, u] = x W[:, u] + b[u]       a[:, u] = relu(z[:, u])        each part alone
    G = sum over parts of  a[:, u] M[:, u]^T                        (5) the ONLY sum across parts: (N, C)
    loss, dG = softmax cross-entropy of G                           (6) one thread, (N, C): tiny
    dM[:, u] = dG^T a[:, u]                                         (7) each part alone
    dz[:, u] = (dG M[:, u]) * 1[a[:, u] > 0]
    dW[:, u] = x^T dz[:, u]        db[u] = sum_n dz[n, u]           (8) each part alone
    then the optimiser: every element of W, b, M updated from its own gradient, state and nothing
    else, so the threads take a slice each of the flattened arrays

The gradient of unit j needs only dG, which is (N, C) = (256, 10) here, not the other units. So
everything but one small sum and one small softmax runs in T threads at once: the products, the
ReLU and the optimiser's element-wise passes, which a multithreaded BLAS leaves on one core.
(Backprop has no such split: its error to the layer below, dx = dz W^T, sums over every unit.)

Per batch and layer the threads meet three times: after the forward parts (to add up G), after the
gradient parts (the optimiser needs a started step), and after the optimiser (the next layer and
the next batch need the updated layer). ``in_parallel`` (minimf/parallel/threads.py) runs part 0 in the
calling thread and the others on a thread pool, and returns when all are done.

Speed: the threads' products release Python's GIL inside BLAS, and NumPy's element-wise loops
release it too, so T threads can keep T cores busy. Give each thread ONE BLAS thread
(``OPENBLAS_NUM_THREADS=1``, or threadpoolctl): T threads with T BLAS threads each would fight over
the cores. Measured in benchmarks/epoch_time.py ("MF unit-split") against the sequential step with
a two-threaded BLAS; see docs/benchmarks.md.

Results: the same as ``MonoForwardModel.train_step`` up to float rounding (G is added up part by
part, and a product over a column slice need not round like the whole product); with
``threads=1`` bit for bit (tests/test_unit_split.py). Dense layers (``MonoForwardNet``) on NumPy
only: a conv block's units share one im2col matrix, and a GPU is parallel already.
"""
from minimf.backend import get_array_module
from minimf.nn.layers import relu_backward, relu_forward
from minimf.nn.losses import softmax_cross_entropy
from minimf.rules.mono_forward import MonoForwardLayer
from minimf.parallel.threads import check_supports, check_threaded, in_parallel, split, train_batches, update_in_parallel


def train_unit_split(model, batches, threads=2, validate=True):
    """Train ``model`` (a MonoForwardNet on NumPy) on ``batches`` with every layer's units shared
    out between ``threads`` threads.

    batches: iterable of (x, y), x (N, D), y (N,) labels, checked as ``train_step`` checks them
    (``validate=False``: shapes and dtypes only). Returns the losses, one list per batch with one float per layer
    (on the CPU, where this trainer runs, reading a loss costs nothing).
    """
    check_unit_split(model, threads)
    return train_batches(model, batches, threads,
                         lambda x, y, pool: unit_split_step(model, x, y, pool, threads), validate)


def check_unit_split(model, threads):
    """``threads`` must be a positive int no larger than the narrowest layer, and ``model`` a
    Mono-Forward net of dense layers on NumPy with C-contiguous parameters."""
    check_threaded(model, threads, "unit-split")
    for i, layer in enumerate(model.layers, start=1):
        if not isinstance(layer, MonoForwardLayer):
            raise ValueError(f"unit-split training needs dense layers (MonoForwardNet); "
                             f"layer {i} is a {type(layer).__name__}")
        if layer.W.shape[1] < threads:
            raise ValueError(f"layer {i} has {layer.W.shape[1]} units, fewer than {threads} threads")
        for name, p in layer.params.items():
            if p is not None and not p.flags.c_contiguous:
                raise ValueError(f"layer {i}: parameter {name} is not C-contiguous")
    check_supports(model, "UNIT_SPLIT", "unit split")    # e.g. a global-credit net of dense layers


def unit_split_step(model, x, y, pool, threads):
    """One batch through every layer in turn, each layer's work shared out (``layer_step``).
    The next layer gets a_i computed before layer i's update, as in ``train_step``.
    Returns the per-layer losses (Python floats, before the update)."""
    losses = []
    for layer, optimizer in zip(model.layers, model.optimizers):
        x, loss = layer_step(layer, optimizer, x, y, pool, threads)
        losses.append(float(loss))
    return losses


def layer_step(layer, optimizer, x, y, pool, threads):
    """Forward, local loss, gradients and update of one dense MF layer, in ``threads`` parts.

    x: (N, D) the layer's input   y: (N,) labels. Returns (a, loss): a (N, H) computed before the
    update, for the next layer; loss a 0-d array.
    """
    xp = get_array_module(x)
    x = layer.dense_input(x)                          # input_norm "layer": once, over all D inputs; a constant
    units = split(layer.W.shape[1], threads)          # the unit columns of each part
    a = xp.empty((x.shape[0], layer.W.shape[1]), dtype=x.dtype)
    shares = in_parallel(pool, [lambda u=u: forward_part(layer, x, a, u) for u in units])
    G = shares[0]
    for share in shares[1:]:
        G += share                                    # (5) goodness G = a M^T, summed part by part
    loss, dG = softmax_cross_entropy(G, y)            # (6) local loss, one thread: (N, C)
    grads = {name: None if p is None else xp.empty_like(p) for name, p in layer.params.items()}
    in_parallel(pool, [lambda u=u: gradient_part(layer, x, a, dG, grads, u) for u in units])
    update_in_parallel(pool, [(optimizer, layer.params, grads)], threads)   # (7), (8)
    return a, loss


def forward_part(layer, x, a, u):
    """a[:, u] = relu(x W[:, u] + b[u]), written into a. x: (N, D), a: (N, H), u: a slice of the
    H units. Returns this part's share of the goodness, a[:, u] M[:, u]^T: (N, C)."""
    xp = get_array_module(x)
    z = a[:, u]                                       # a view: the results land in a
    xp.matmul(x, layer.W[:, u], out=z)                # z = x W[:, u]
    if layer.b is not None:
        z += layer.b[u]
    relu_forward(z, out=z)                            # a[:, u] = relu(z), in place
    return z @ layer.M[:, u].T                        # (5) this part's share of G


def gradient_part(layer, x, a, dG, grads, u):
    """This part's gradients, written into the columns u of grads["W"], grads["b"], grads["M"].
    x: (N, D), a: (N, H), dG: (N, C) = dL/dG."""
    xp = get_array_module(x)
    a_u = a[:, u]
    xp.matmul(dG.T, a_u, out=grads["M"][:, u])       # (7) dL/dM = dG^T a
    da = dG @ layer.M[:, u]                           # the error reaches a only through M
    dz = relu_backward(da, a_u, out=da)               # ... and z only where z > 0 (in place)
    xp.matmul(x.T, dz, out=grads["W"][:, u])          # (8) dL/dW = x^T dz; stops at x
    if layer.b is not None:
        dz.sum(axis=0, out=grads["b"][u])
