"""What minimf's threaded trainers share: cutting a range into parts, running tasks on a thread
pool, and an optimiser step shared out between threads.

Threads help NumPy because its matrix products (BLAS) and element-wise loops release Python's GIL:
two threads can keep two cores busy. Each thread should then call a ONE-threaded BLAS
(``OPENBLAS_NUM_THREADS=1``, or threadpoolctl), or the threads' BLAS threads fight over the cores.
Used by minimf/parallel/unit_split.py (a layer's units shared out) and minimf/parallel/batch_split.py (a batch's
examples shared out); minimf/parallel/pipeline.py (one thread per layer) and ray_pipeline.py use
only ``check_supports``.
"""
from concurrent.futures import ThreadPoolExecutor
from functools import partial


def check_supports(model, flag, trainer):
    """Refuse a network whose class says it cannot be trained by ``trainer``: its ``flag``
    (PIPELINE, UNIT_SPLIT, BATCH_SPLIT) is False. A global-credit network
    (minimf/rules/global_credit.py), for one, has layers that need the error of the layers above:
    run one after the other on their own losses, they would quietly train the local rule instead."""
    if not getattr(model, flag, False):
        raise ValueError(f"{type(model).__name__} cannot be trained by the {trainer}: its class says "
                         f"{flag} = False")


def check_threaded(model, threads, trainer):
    """A threaded ``trainer`` ("unit-split", "batch-split") needs a positive int of ``threads``
    and a model on NumPy: its threads share out CPU cores (a GPU is parallel already)."""
    if not is_positive_int(threads):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if model.xp.__name__ != "numpy":
        raise ValueError(f"{trainer} training runs on NumPy (CPU threads), not {model.xp.__name__}")


def is_positive_int(value):
    """An int (not a bool) of at least 1."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def train_batches(model, batches, threads, step, validate=True):
    """The epoch loop of a threaded trainer: every batch checked as ``train_step`` checks it (with
    ``validate=False`` shapes and dtypes only, for data checked once already), then
    ``step(x, y, pool)`` with a pool of ``threads - 1`` helper threads (the calling thread is the
    T-th). Returns the list of what ``step`` returned, one entry per batch."""
    results = []
    with ThreadPoolExecutor(max_workers=max(threads - 1, 1)) as pool:
        for x, y in batches:
            x, y = model.check_batch(x, y, values=validate)
            results.append(step(x, y, pool))
    return results


def split(n, parts):
    """``parts`` consecutive slices covering range(n), their sizes differing by at most one."""
    bounds = [n * k // parts for k in range(parts + 1)]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]


def in_parallel(pool, tasks):
    """Run ``tasks`` (functions of no arguments) at once: the first in this thread, the others on
    ``pool`` (a ThreadPoolExecutor). Returns their results in order once all have finished;
    raises the first error."""
    futures = [pool.submit(task) for task in tasks[1:]]
    try:
        first = tasks[0]()
    finally:
        for future in futures:                        # never leave a task writing to shared arrays
            future.exception()                        # (waits for it; its error is raised below)
    return [first, *(future.result() for future in futures)]


def update_in_parallel(pool, steps, threads):
    """One optimiser step of several layers, shared out between ``threads`` threads.

    steps: [(optimizer, params, grads), ...], one per layer, with C-contiguous arrays. Every
    optimiser starts its step here, once (``start_step``); then thread k updates slice k of every
    flattened parameter (``update(..., part)``). An element's update reads and writes only that
    element, so the result is that of ``optimizer.step(params, grads)`` for every layer, bit for bit.
    """
    for optimizer, _, grads in steps:
        optimizer.start_step(grads)
    in_parallel(pool, [partial(_update_part, steps, threads, k) for k in range(threads)])


def _update_part(steps, threads, k):
    """Slice k (of ``threads``) of every parameter of every layer."""
    for optimizer, params, grads in steps:
        for name, g in grads.items():
            if g is not None:
                optimizer.update(name, params[name], g, split(g.size, threads)[k])
