"""Data parallelism: every batch's examples shared out between threads, for backprop and
Mono-Forward alike (any model with ``loss_and_gradients`` whose loss is a mean over the examples).

A batch loss is a mean, L = (1/N) sum_n l_n, so its gradient is a weighted sum of the gradients of
the batch's parts. With parts P_1, ..., P_K of n_1, ..., n_K examples and L_k the mean over P_k::

    dL/dtheta = sum_k (n_k / N) dL_k/dtheta

Each thread takes some of the parts (micro-batches), computes each part's loss and gradients with
the model's own ``loss_and_gradients`` (the code ``train_step`` runs) and adds them up, weighted by
n_k / N. Then the threads add their sums together (each thread one slice of every array) and take
ONE optimiser step, shared out between the threads too (``update_in_parallel``, minimf/parallel/threads.py).
The parameters do not change while the parts are computed, so every part sees the same network.
In Mono-Forward every layer's local loss is such a mean; its gradients are those of
``train_step`` (layer i+1 gets a_i computed before layer i's update).

Why micro-batches (``micro_batch``, examples per part; default: one part per thread): a conv
block's im2col matrix grows with the batch (256 images of 64 x 14 x 14 maps: 115 MB). Arrays that
big come fresh from the operating system at every step (glibc returns them when they are freed),
and every first touch of a fresh page is a page fault; they are also far bigger than the cache.
Each thread works through its parts one after the other, so smaller parts mean smaller arrays that
the allocator hands back from its pool (``benchmarks/epoch_time.py --micro-batch M`` times a part size).

Speed: the products (BLAS) and NumPy's element-wise loops release Python's GIL, so T threads keep
T cores busy when each calls a ONE-threaded BLAS (``OPENBLAS_NUM_THREADS=1``, or threadpoolctl).
Unlike a multithreaded BLAS, which shares out only the products, this shares out everything in a
step: im2col, col2im, pooling, ReLU, Adam. Measured in benchmarks/epoch_time.py ("batch-split").

Results: the same as ``train_step`` up to float rounding (the sums are formed in another order);
with one thread and no micro-batches, bit for bit (tests/test_batch_split.py). NumPy only.
"""
from functools import partial

from minimf.nn.optim import flat_parts
from minimf.parallel.threads import check_threaded, in_parallel, is_positive_int, split, train_batches, update_in_parallel


def train_batch_split(model, batches, threads=2, micro_batch=None, validate=True):
    """Train ``model`` (backprop or Mono-Forward, on NumPy) on ``batches``, every batch's examples
    shared out between ``threads`` threads in parts of at most ``micro_batch`` examples.

    batches: iterable of (x, y), checked as ``train_step`` checks them (``validate=False``: shapes
    and dtypes only).
    Returns one entry per batch: the loss (backprop) or the list of every layer's loss
    (Mono-Forward), as Python floats (on the CPU, where this trainer runs, reading them costs nothing).
    """
    check_batch_split(model, threads, micro_batch)
    return train_batches(model, batches, threads,
                         lambda x, y, pool: batch_split_step(model, x, y, pool, threads, micro_batch),
                         validate)


def check_batch_split(model, threads, micro_batch):
    """threads and micro_batch (None or) positive ints; a NumPy model with ``loss_and_gradients``."""
    check_threaded(model, threads, "batch-split")
    if micro_batch is not None and not is_positive_int(micro_batch):
        raise ValueError(f"micro_batch must be a positive integer or None, got {micro_batch!r}")
    if not hasattr(model, "loss_and_gradients"):
        raise ValueError(f"batch-split training needs a model with loss_and_gradients; "
                         f"{type(model).__name__} has none")


def batch_split_step(model, x, y, pool, threads, micro_batch):
    """One batch: the parts' weighted gradients in the threads, their sum, one optimiser step.
    x: (N, ...) and y: (N,) already checked. Returns what ``train_step`` returns."""
    parts = micro_batches(x.shape[0], threads, micro_batch)
    shares = [parts[k::threads] for k in range(min(threads, len(parts)))]   # thread k: parts k, k+T, ...
    sums = in_parallel(pool, [partial(weighted_sum, model, x, y, share) for share in shares])
    grads = sums[0][1]                                                     # thread 0's sum ...
    others = [thread_grads for _, thread_grads, _ in sums[1:]]             # ... plus the others'
    in_parallel(pool, [partial(add_part, grads, others, threads, k) for k in range(threads)])
    update_in_parallel(pool, [(optimizer, layer.params, layer_grads)
                              for optimizer, layer, layer_grads in zip(model.optimizers, model.layers, grads)],
                       threads)
    losses = [sum(thread_losses[i] for thread_losses, _, _ in sums) for i in range(len(sums[0][0]))]
    per_layer = sums[0][2]
    return losses if per_layer else losses[0]


def micro_batches(n, threads, micro_batch):
    """The parts of a batch of n examples: slices of at most ``micro_batch`` examples, or (None)
    one part per thread (fewer when n < threads)."""
    if micro_batch is None:
        return split(n, min(threads, n))
    return [slice(start, min(start + micro_batch, n)) for start in range(0, n, micro_batch)]


def weighted_sum(model, x, y, parts):
    """(losses, grads, per_layer): sum over ``parts`` of (n_k / N) times each part's losses and
    gradients.

    losses: a list of Python floats, one per layer when ``per_layer`` (Mono-Forward: a loss per
    layer), else one (backprop); grads: one dict per layer of fresh C-contiguous arrays (or None).
    """
    n = x.shape[0]
    total_losses, total = None, None
    for part in parts:
        loss, grads = model.loss_and_gradients(x[part], y[part])
        weight = (part.stop - part.start) / n                       # n_k / N
        per_layer = isinstance(loss, list)
        weighted = [float(value) * weight for value in (loss if per_layer else [loss])]
        if total is None:
            total_losses = weighted
            total = [{name: None if g is None else _scaled_copy(g, weight) for name, g in layer.items()}
                     for layer in grads]
            continue
        total_losses = [a + b for a, b in zip(total_losses, weighted)]
        for layer_total, layer in zip(total, grads):
            for name, g in layer.items():
                if g is not None:
                    g *= weight                                     # g is fresh: ours to scale
                    layer_total[name] += g
    return total_losses, total, per_layer


def add_part(grads, others, threads, k):
    """grads += every array of ``others``, slice k (of ``threads``) of every flattened array."""
    for i, layer in enumerate(grads):
        for name, g in layer.items():
            if g is None:
                continue
            part = split(g.size, threads)[k]
            (total,) = flat_parts(part, g)
            for other in others:
                total += flat_parts(part, other[i][name])[0]


def _scaled_copy(g, weight):
    """weight * g in a new C-contiguous array (g may be a transposed view from a product)."""
    out = g.copy(order="C")
    out *= weight
    return out
