"""Mono-Forward's layers as a pipeline: layer i trains on batch t while layer i+1 trains on batch t-1.

In MF no error travels from one layer to another (MF v1, eqs. 5-8): layer i needs only its input
a_{i-1} and the labels, and once it has computed a_i it never hears from the layers above. So the
layers need not take turns. With L layers and batches b1, b2, ..., one thread per layer:

    time ->      tick 1   tick 2   tick 3   tick 4
    layer 1       b1       b2       b3       b4
    layer 2                b1       b2       b3
    layer 3                         b1       b2

Each layer runs its own loop (``_run_layer``): take (a_{i-1}, y) of the next batch from its inbox,
forward, local loss, gradients, its optimiser step, then put a_i in the next layer's inbox. The
main thread checks every batch and feeds layer 1.

Why the result is the same as ``MonoForwardModel.train_step`` batch after batch (the sequential
schedule), bit for bit: in the sequential step, layer i on batch t uses
  - its own parameters after its updates on batches 1..t-1, and
  - a_{i-1} of batch t, computed by layer i-1 with ITS parameters after batches 1..t-1, before
    its update on batch t (``train_step`` hands on the activations computed before the update).
In the pipeline layer i takes the batches in order from one queue, so it too has done exactly
batches 1..t-1 when it starts batch t; and the a_{i-1} in its inbox was computed by layer i-1
in the same way, before layer i-1 updated on batch t. Every layer performs the same operations on
the same numbers in the same order; only WHEN each happens changes. (``tests/test_pipeline.py``
checks that the parameters are identical after N steps, on NumPy.)

When it helps: the layers' matrix products run at the same time, on different cores. NumPy's BLAS
releases Python's GIL, so threads are enough. With one BLAS thread per product and as many cores as
layers, the epoch can take as long as the slowest layer instead of the sum of all layers (for
784-1000-1000 the second layer has 56% of the products, so at best 1/0.56 = 1.8x faster). When
the BLAS already spreads each product over every core (BLAS threads = cores), there is nothing
left to share out, and the pipeline can only add overhead (threads, queues, the layers competing
for the same cores and caches). The pipeline cannot start before the first batch has passed
layer 1, nor stop before the last has passed layer L: L - 1 ticks of the epoch are not parallel.

On CuPy each layer's thread queues its kernels on a CUDA stream of its own, so the GPU can overlap
small layers. Three rules keep that correct (``WorkerHandoff`` in minimf/backend.py):
  - every worker first makes the caller's device current (new threads start on device 0);
  - every worker's stream first waits for an event recorded on the caller's stream when the
    pipeline starts: the data set, the batch order and the initial weights were copied there, and
    a non-blocking stream would not otherwise wait for those copies;
  - every layer waits for its own stream (``synchronize``) before handing a_i on, so the next layer
    never reads a half-written array and no array is freed while a kernel still reads it. That is
    a wait of one layer's thread, not a transfer to the host: the losses stay on the device and are
    read once per epoch by the caller.
There the results agree with the sequential ones to float rounding, not always bit for bit: cuBLAS
promises bitwise-reproducible products only while one stream is active (tests/test_pipeline.py).
"""
import queue
import threading

from minimf.backend import WorkerHandoff
from minimf.parallel.threads import check_supports
from minimf.parallel.timeline import now
from minimf.rules.mono_forward import train_layer

QUEUE_SIZE = 2   # batches waiting between two layers: enough to smooth jitter, little memory
_DONE = object()  # put after the last batch: "no more batches", passed from layer to layer


def train_pipelined(model, batches, validate=True, timeline=None):
    """Train ``model`` (a MonoForwardNet or MonoForwardCNN) on ``batches`` with one thread per layer.

    batches: iterable of (x, y), x (N, *input_shape), y (N,) labels, checked as ``train_step``
    checks them (``validate=False``: shapes and dtypes only, for data whose values were checked
    once already).
    Returns the losses, one list per batch with one 0-d array per layer (as ``train_step``).
    ``timeline``: a ``minimf.parallel.timeline.Timeline`` that gets when each layer trained each batch.
    The parameters end up exactly as after ``model.train_step`` on every batch in turn.
    An error in any layer stops every thread and is raised here.
    """
    check_supports(model, "PIPELINE", "pipeline")
    handoff = WorkerHandoff(model.xp)   # the caller's device, and an event after its copies
    inboxes = [queue.Queue(maxsize=QUEUE_SIZE) for _ in model.layers]   # inboxes[i] feeds layer i
    losses = [[] for _ in model.layers]                                  # losses[i][t]: layer i, batch t
    errors = []
    workers = [threading.Thread(target=_run_layer, daemon=True,
                                args=(layer, optimizer, inboxes[i], inboxes[i + 1] if i + 1 < len(inboxes) else None,
                                      losses[i], errors, handoff, i, timeline))
               for i, (layer, optimizer) in enumerate(zip(model.layers, model.optimizers))]
    for worker in workers:
        worker.start()
    try:
        _feed(model, batches, inboxes[0], handoff, validate)
    finally:                      # also after a bad batch: stop the workers before raising
        inboxes[0].put(_DONE)
        for worker in workers:
            worker.join()
    if errors:
        raise errors[0]
    return [list(per_layer) for per_layer in zip(*losses)]


def _feed(model, batches, inbox, handoff, validate):
    """Check every batch (shapes, dtype and, with ``validate``, NaN and labels) and put (x, y)
    into layer 1's inbox."""
    with handoff.worker_stream() as stream:
        for x, y in batches:
            x, y = model.check_batch(x, y, values=validate)
            stream.synchronize()
            inbox.put((x, y))


def _run_layer(layer, optimizer, inbox, outbox, losses, errors, handoff, index=0, timeline=None):
    """One layer's loop: batch after batch from ``inbox``, train, hand a_i on to ``outbox``.

    After an error the layer keeps emptying its inbox (so the layer below never waits on a full
    queue) and passes the end mark on, so that every thread finishes.
    """
    failed = False
    with handoff.worker_stream() as stream:
        while (item := inbox.get()) is not _DONE:
            if failed:
                continue
            x, y = item
            try:
                start = now()
                a, loss, _ = train_layer(layer, optimizer, x, y)   # (5)-(8) for this layer
                losses.append(loss)                            # on the device; read once per epoch
                stream.synchronize()                           # a_i complete before the next layer reads it
                if timeline is not None:
                    timeline.add(index, start, now())
            except Exception as err:  # noqa: BLE001 -- raised again by train_pipelined
                errors.append(err)
                failed = True
                continue
            if outbox is not None:
                outbox.put((a, y))
    if outbox is not None:
        outbox.put(_DONE)
