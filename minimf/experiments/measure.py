"""Measuring memory and time: the code behind the efficiency experiments and the scripts in
benchmarks/ (which parse options, time with these helpers and print).

Memory
------
A *meter* counts the bytes allocated while it runs:

* NumPy: ``TracemallocMeter``. NumPy reports every array it allocates to ``tracemalloc``, so the count
  covers activations, caches, gradients and temporaries (and small Python objects). It does not see the
  BLAS library's own work buffers.
* CuPy: ``CupyPoolMeter``. A CuPy memory hook adds every block handed out by CuPy's memory pool and
  subtracts it when it goes back: the bytes in use by arrays, with a peak. (CuPy itself comes from
  minimf.backend: ``xp`` is the module it returned; nothing here imports cupy.)

``step_peak_bytes`` is the peak during ONE ``train_step``, on top of what existed before it (parameters,
optimiser state after a warm-up step, the batch). ``resident_and_step_peak`` adds what stays allocated between steps
(parameters and optimiser state): the two together are the allocator's peak of a step, and
``mixer_step_memory`` measures them for MF and BP MLP-Mixers of several depths, ``mlp_step_memory`` for
an MLP (benchmarks/mixer_memory.py and ``python -m minimf.experiments mixer``). ``step_trace`` follows a
fresh network over its first steps, ``mf_layer_trace`` looks inside one MF step, layer by layer.

Time
----
One timer for everything: ``seconds_of(fn, sync)`` is the wall-clock time of one call, closed by a
device synchronisation on CuPy; ``interleaved(timers, repeats)`` runs every timer once per repeat
(A, B, A, B, ...), so that a noisy moment of a shared machine hits all of them alike; report medians
and ratios, not absolute seconds. On top of them, ``prediction_times`` times ``predict`` on one
example and on a batch, ``epoch_times`` whole epochs of ``train_step``.
"""
import gc
import statistics
import sys
import time
import tracemalloc
from typing import Callable, NamedTuple

import numpy as np

from minimf.backend import backend_name, make_rng
from minimf.rules.backprop import BackpropNet
from minimf.rules.forward_forward import ForwardForwardNet
from minimf.rules.mixer import BackpropMixer, MonoForwardMixer
from minimf.rules.mono_forward import MonoForwardNet

MIB = 2 ** 20
MLP_2X1000 = (784, 1000, 1000)    # MF v1's MLP on MNIST, whose memory Spyra & Dzwinel measured too


# --- memory meters -------------------------------------------------------------------------------

class TracemallocMeter:
    """Host memory allocated through Python's and NumPy's allocators (tracemalloc), in bytes."""

    def __enter__(self):
        tracemalloc.start()
        return self

    def __exit__(self, *exc):
        tracemalloc.stop()

    def reset_peak(self):
        tracemalloc.reset_peak()

    def current(self):
        return tracemalloc.get_traced_memory()[0]

    def peak(self):
        return tracemalloc.get_traced_memory()[1]


class CupyPoolMeter:
    """GPU memory in use by CuPy arrays, counted by a memory hook on CuPy's pool, in bytes.

    malloc (a block handed out by the pool) adds its size, free (the block back in the pool) subtracts
    it; ``peak`` is the largest sum since ``reset_peak``. Counts start at 0 when the meter starts.
    """

    def __init__(self, xp):
        self.xp = xp
        self._current = self._peak = 0
        meter = self

        class PeakHook(xp.cuda.MemoryHook):
            name = "minimf_peak"

            def malloc_postprocess(self, **kwargs):
                meter._add(kwargs["mem_size"])

            def free_postprocess(self, **kwargs):
                meter._add(-kwargs["mem_size"])

        self.hook = PeakHook()

    def _add(self, nbytes):
        self._current += nbytes
        self._peak = max(self._peak, self._current)

    def __enter__(self):
        self.xp.cuda.Device().synchronize()
        self.hook.__enter__()
        return self

    def __exit__(self, *exc):
        self.hook.__exit__(*exc)

    def reset_peak(self):
        self.xp.cuda.Device().synchronize()
        self._peak = self._current

    def current(self):
        return self._current

    def peak(self):
        self.xp.cuda.Device().synchronize()
        return self._peak


def memory_meter(xp):
    """The meter for the backend of ``xp``: tracemalloc for NumPy, a pool hook for CuPy."""
    if backend_name(xp) == "numpy":
        return TracemallocMeter()
    if not hasattr(xp.cuda, "MemoryHook"):   # the strict stand-in (MINIMF_STRICT_CUPY=1) has no memory pool
        raise ValueError("GPU memory is measured on CuPy's memory pool: it needs real CuPy and a GPU, "
                         "not the CPU stand-in of MINIMF_STRICT_CUPY=1")
    return CupyPoolMeter(xp)


# --- memory of training ----------------------------------------------------------------------------

def random_batch(batch_size, example_shape, num_classes=10, seed=0, xp=np):
    """x: (N, *example_shape) float32 standard normal, y: (N,) int64 labels in [0, num_classes).
    How much a step allocates does not depend on the values, so no data set is needed."""
    rng = make_rng(seed)
    x = rng.standard_normal((batch_size, *example_shape), dtype=np.float32)
    return xp.asarray(x), xp.asarray(rng.integers(0, num_classes, size=batch_size))


def step_peak_bytes(make_net, x, y, meter):
    """Peak bytes allocated during one ``train_step`` of a fresh ``make_net()``, on top of what
    existed before it, measured after one warm-up step (so that Adam's m and v exist). The meter
    must be running."""
    net = make_net()
    net.train_step(x, y)
    gc.collect()
    meter.reset_peak()
    before = meter.current()
    net.train_step(x, y)
    return meter.peak() - before


def resident_and_step_peak(make_net, x, y, meter):
    """(resident, step peak, parameters) for a fresh ``make_net()``: the bytes that stay allocated after
    one warm-up step (parameters and optimiser state), the peak during the next ``train_step`` on top of
    what existed before it (as ``step_peak_bytes``), and the number of parameters. The meter must be
    running. resident + step peak is the allocator's peak of a training step."""
    gc.collect()
    base = meter.current()
    net = make_net()
    net.train_step(x, y, validate=False)            # warm-up: Adam's state now exists
    gc.collect()
    resident = meter.current() - base
    meter.reset_peak()
    before = meter.current()
    net.train_step(x, y, validate=False)
    step = meter.peak() - before
    parameters = sum(a.size for layer in net.layers for a in layer.params.values() if a is not None)
    del net
    gc.collect()
    return resident, step, parameters


def measure_pair(make_mf, make_bp, x, y, meter):
    """{"MF": (resident, step peak, parameters), "BP": ...} of ``resident_and_step_peak``, bytes and counts."""
    return {"MF": resident_and_step_peak(make_mf, x, y, meter), "BP": resident_and_step_peak(make_bp, x, y, meter)}


def mixer_step_memory(xp, input_shape, num_classes, depths, sizes, batch_size, meter, seed=0, lr=1e-3,
                      say=None):
    """The memory of one training step of an MF and a BP MLP-Mixer at each depth of ``depths``, the
    other sizes ``sizes`` (patch, width, token_hidden, channel_hidden), on one random batch of
    ``batch_size`` examples of ``input_shape``: {depth: measure_pair's result}. ``say(depth)`` is
    called before each depth (progress). The meter must be running."""
    backend = backend_name(xp)
    common = dict(input_shape=input_shape, num_classes=num_classes, backend=backend, seed=seed, lr=lr, **sizes)
    x, y = random_batch(batch_size, input_shape, num_classes, seed, xp)
    results = {}
    for depth in depths:
        if say:
            say(depth)
        results[depth] = measure_pair(lambda: MonoForwardMixer(depth=depth, **common),
                                      lambda: BackpropMixer(depth=depth, **common), x, y, meter)
    return results


def mlp_step_memory(xp, batch_size, meter, sizes=MLP_2X1000, num_classes=10, seed=0, lr=1e-3):
    """The memory of one training step of an MF and a BP MLP of ``sizes`` (by default the 2 x 1000 MLP
    on MNIST) on one random batch of ``batch_size`` examples: measure_pair's result. Beside a Mixer's,
    it shows where MF's advantage vanishes: the parameters dominate. The meter must be running."""
    common = dict(sizes=list(sizes), num_classes=num_classes, backend=backend_name(xp), seed=seed, lr=lr)
    x, y = random_batch(batch_size, (sizes[0],), num_classes, seed, xp)
    return measure_pair(lambda: MonoForwardNet(**common), lambda: BackpropNet(**common), x, y, meter)


def step_trace(make_net, x, y, steps, meter):
    """A fresh network over its first ``steps`` training steps: per step the peak during the step and
    the memory still in use after it, in bytes above what existed before step 1 (parameters, batch).
    Returns {"peak": [...], "in_use": [...]}."""
    net = make_net()
    gc.collect()
    start = meter.current()
    trace = {"peak": [], "in_use": []}
    for _ in range(steps):
        meter.reset_peak()
        net.train_step(x, y)
        trace["peak"].append(meter.peak() - start)
        trace["in_use"].append(meter.current() - start)
    return trace


def mf_layer_trace(net, x, y, meter):
    """Inside one MF ``train_step`` (after a warm-up step): for each layer, the bytes in use when its
    ``local_gradients`` starts and the peak while it runs, above the memory before the step.

    What is in use when layer i starts is what the step still holds from the layers below: if it does
    not grow with i, MF keeps only one layer's activations at a time. Returns a list of
    {"layer", "in_use_at_start", "peak"}.
    """
    net.train_step(x, y)
    records, state = [], {}

    def traced(original, index):
        def local_gradients(x_in, y_in, **options):
            at_start = meter.current() - state["start"]
            meter.reset_peak()
            result = original(x_in, y_in, **options)
            records.append({"layer": index, "in_use_at_start": at_start, "peak": meter.peak() - state["start"]})
            return result
        return local_gradients

    for i, layer in enumerate(net.layers, start=1):
        layer.local_gradients = traced(layer.local_gradients, i)    # an instance attribute hides the method
    try:
        gc.collect()
        state["start"] = meter.current()
        net.train_step(x, y)
    finally:
        for layer in net.layers:
            del layer.local_gradients
    return records


def line_fit(xs, ys):
    """(intercept a, slope) of the least-squares line y = a + slope * x."""
    slope, intercept = np.polyfit(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), 1)
    return float(intercept), float(slope)


# --- the timer (shared with benchmarks/) -------------------------------------------------------------

def device_sync(xp):
    """A function that waits for the device (CuPy) or does nothing (NumPy): call it before reading a clock."""
    return xp.cuda.Device().synchronize if backend_name(xp) == "cupy" else (lambda: None)


def seconds_of(fn, sync=lambda: None):
    """Wall-clock seconds of one call ``fn()``. ``sync()`` waits for the device before the clock starts
    and before it stops: a GPU may still be working when ``fn`` returns."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def interleaved(timers, repeats, say=None):
    """{name: [what ``timers[name]()`` returns, one per repeat]}, taking every timer once per repeat
    (A, B, C, A, B, C, ...), so that a noisy moment of a shared machine hits all of them alike.
    ``say(repeat, name)`` is called before each timer runs (progress)."""
    results = {name: [] for name in timers}
    for repeat in range(1, repeats + 1):
        for name, timer in timers.items():
            if say:
                say(repeat, name)
            results[name].append(timer())
    return results


# --- prediction time (MF v1, Table 4) --------------------------------------------------------------

class Method(NamedTuple):
    """One way to predict: ``predict(x)`` returns labels; ``params`` the parameters it uses;
    ``macs`` its multiply-adds per example (matrix products only)."""
    name: str
    predict: Callable
    params: int
    macs: int


def prediction_methods(sizes, backend, num_classes=10, seed=0):
    """BP, MF in both modes and FF in both modes on untrained networks with hidden layers ``sizes``
    (no biases: the paper's parameter counts). Prediction costs the same whatever the weights are."""
    common = dict(sizes=sizes, num_classes=num_classes, backend=backend, seed=seed, bias=False)
    bp, mf, ff = BackpropNet(**common), MonoForwardNet(**common), ForwardForwardNet(**common)
    C = num_classes
    hidden = sum(d * h for d, h in zip(sizes[:-1], sizes[1:]))     # multiply-adds of the hidden layers
    return [
        Method("BP", bp.predict, bp.num_parameters(), hidden + sizes[-1] * C),
        Method("MF, BP mode", lambda x: mf.predict(x, "bp"), mf.num_parameters("bp"),
               hidden + sum(sizes[1:]) * C),
        Method("MF, FF mode", lambda x: mf.predict(x, "ff"), mf.num_parameters("ff"),
               hidden + sum(sizes[1:]) * C),
        Method("FF, all labels", lambda x: ff.predict(x, "all_labels"), ff.num_parameters("all_labels"),
               C * hidden),
        Method("FF, one pass", lambda x: ff.predict(x, "one_pass"), ff.num_parameters("one_pass"),
               hidden + sum(sizes[1:]) * C),
    ]


def prediction_times(methods, x, single, repeats, sync=lambda: None, say=None):
    """Time every method on one example (the median of ``single`` calls, each on the next example of
    x) and on all of ``x`` (one call), ``repeats`` times, ``interleaved``. ``say(text)`` is told which
    method runs (default: stderr). Returns ({name: [single seconds per repeat]}, {name: [batch
    seconds per repeat]})."""
    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    for m in methods:                      # warm-up: first calls allocate and load code
        m.predict(x[:1])
        m.predict(x[:100])
    sync()

    def single_and_batch(m):
        calls = []
        for i in range(single):
            example = x[i % x.shape[0]:i % x.shape[0] + 1]
            calls.append(seconds_of(lambda: m.predict(example), sync))
        return statistics.median(calls), seconds_of(lambda: m.predict(x), sync)

    times = interleaved({m.name: lambda m=m: single_and_batch(m) for m in methods}, repeats,
                        say=lambda repeat, name: say(f"  repeat {repeat}/{repeats}: {name} ..."))
    return ({name: [s for s, _ in pairs] for name, pairs in times.items()},
            {name: [b for _, b in pairs] for name, pairs in times.items()})


# --- epoch time (MF v1, Table 5) ---------------------------------------------------------------------

def time_epoch(net, x, y, batch_size, sync=lambda: None):
    """Seconds of one pass of ``train_step`` over (x, y) in batches of ``batch_size`` (in order: the
    cost of a step does not depend on which examples it sees)."""
    def epoch():
        for first in range(0, x.shape[0], batch_size):
            net.train_step(x[first:first + batch_size], y[first:first + batch_size])
    return seconds_of(epoch, sync)


def epoch_times(nets, x, y, batch_sizes, repeats, sync=lambda: None, on_epoch=None):
    """Epoch times, ``interleaved``: {(net name, batch name): [seconds per repeat]}.

    ``nets`` {name: network}, ``batch_sizes`` {name: examples per step}. Each network takes one warm-up
    step at every batch size first (allocations, Adam state); ``on_epoch()`` is called after each epoch."""
    for net in nets.values():
        for size in batch_sizes.values():
            net.train_step(x[:size], y[:size])

    def one_epoch(n, b):
        seconds = time_epoch(nets[n], x, y, batch_sizes[b], sync)
        if on_epoch:
            on_epoch()
        return seconds

    return interleaved({(n, b): lambda n=n, b=b: one_epoch(n, b) for n in nets for b in batch_sizes}, repeats)
