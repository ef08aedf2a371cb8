"""The array backend: NumPy on the CPU or CuPy on a CUDA GPU, chosen once by name.

This is the ONLY module in minimf that imports CuPy, and it does so lazily, the first time
someone asks for the ``"cupy"`` backend. Everything else receives an array module ``xp`` and
writes ``xp.maximum(z, 0)`` instead of ``np.maximum(z, 0)``, so the same line runs on both
(the ``xp`` idiom of Chainer and CuPy)::

    xp = get_backend("numpy")            # or "cupy"
    x = xp.asarray(host_array)           # host -> device (a no-op for NumPy)
    y = to_numpy(x)                      # device -> host, explicit

Without a GPU, ``MINIMF_STRICT_CUPY=1`` makes ``get_backend("cupy")`` return a strict CuPy stand-in
that runs on the CPU (minimf/testing/strict_cupy.py): NumPy underneath, strict where CuPy is (no
implicit host conversion, host syncs counted, streams ordered), so every CuPy path can run in CI.

Random numbers are drawn on the host with NumPy's ``Generator`` (``make_rng``) and then moved
to the device, so a seed gives the same initial weights and the same batch order on both
backends (CuPy's own random streams differ from NumPy's).
"""
import contextlib
import os
import sys

import numpy as np

BACKENDS = ("numpy", "cupy")

CUPY_INSTALL_HINT = (
    'install it with `pip install "minimf[cuda12]"` (CUDA 12) or `pip install "minimf[cuda13]"` (CUDA 13)'
)


# Environment variables that change how fast NumPy runs (never what it computes): BLAS threads, the
# kernel OpenBLAS is forced to use, OpenBLAS's idle-thread spin, glibc's malloc keeping freed memory
# (README, Benchmark). Runs record those that are set beside their results.
BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")   # read when NumPy loads its BLAS
OPENBLAS_KERNEL_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")   # set by hand, they override OpenBLAS's own choice
TIMING_ENV = BLAS_THREAD_VARS + OPENBLAS_KERNEL_VARS + ("OPENBLAS_THREAD_TIMEOUT", "MALLOC_MMAP_MAX_",
                                                        "MALLOC_TRIM_THRESHOLD_")


def timing_environment():
    """{name: value} of the TIMING_ENV variables set in this process's environment."""
    return {name: os.environ[name] for name in TIMING_ENV if name in os.environ}


STRICT_CUPY_VAR = "MINIMF_STRICT_CUPY"          # "1": the cupy backend is the CPU stand-in
STRICT_CUPY_MODULE = "minimf.testing.strict_cupy"
_said = set()   # the notes said once per process


def say_once(message):
    """Print ``message`` on stderr the first time it is asked for in this process."""
    if message not in _said:
        _said.add(message)
        print(message, file=sys.stderr)


def strict_cupy_requested():
    """True when ``MINIMF_STRICT_CUPY=1`` asks for the CPU stand-in in place of CuPy."""
    return os.environ.get(STRICT_CUPY_VAR, "") == "1"


class BackendError(RuntimeError):
    """The requested backend cannot be used here (unknown name, CuPy missing, no GPU)."""


def get_backend(name):
    """Return the array module for ``name``: ``numpy`` or ``cupy``.

    Raises ``BackendError`` with a message that says what to do when the name is unknown,
    CuPy is not installed, or CuPy is installed but finds no CUDA device.
    """
    if name == "numpy":
        return np
    if name == "cupy":
        return _strict_cupy() if strict_cupy_requested() else _import_cupy_with_device()
    raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")


def _strict_cupy():
    """The CPU stand-in for CuPy, saying once on stderr that it is in use."""
    import importlib
    say_once(f"note: {STRICT_CUPY_VAR}=1: the cupy backend is minimf's strict CuPy stand-in on the CPU "
             "(NumPy underneath; no GPU is used)")
    return importlib.import_module(STRICT_CUPY_MODULE)


def _import_cupy_with_device():
    """Import CuPy and check that it sees at least one CUDA device."""
    try:
        import cupy
    except ImportError as err:
        raise BackendError(f"the cupy backend needs CuPy, which is not installed: {CUPY_INSTALL_HINT}") from err
    except Exception as err:  # noqa: BLE001 -- a broken install (CUDA libraries missing) fails in many ways
        raise BackendError(f"CuPy is installed but cannot be imported ({type(err).__name__}: {err}); "
                           "use --backend numpy") from err
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # CUDA driver missing or broken: CuPy raises its own runtime errors
        raise BackendError(f"CuPy {getattr(cupy, '__version__', '')} is installed but cannot reach a CUDA device "
                           f"({err}); use --backend numpy, or {STRICT_CUPY_VAR}=1 for the CPU stand-in "
                           "of CuPy") from err
    if count == 0:
        raise BackendError("CuPy is installed but this machine has no CUDA device; use --backend numpy")
    return cupy


def gpu_available():
    """True when the cupy backend would work here (CuPy importable and a CUDA device present)."""
    try:
        _import_cupy_with_device()
    except BackendError:
        return False
    return True


def get_array_module(*arrays):
    """The array module (numpy or cupy) that the given arrays live in.

    Never imports CuPy (or the stand-in) itself: if it has not been imported, no array can be one of its.
    """
    for name in ("cupy", STRICT_CUPY_MODULE):
        module = sys.modules.get(name)
        if module is not None:
            xp = module.get_array_module(*arrays)
            if xp is not np:
                return xp
    return np


_KERNELS = {}   # (array module, maker) -> the kernels the maker built for that module


def kernels_for(xp, make):
    """The fused kernels ``make(xp)`` builds (functions wrapped by ``xp.fuse()``), made once per
    array module and kept: CuPy traces and compiles a fused function on its first call for each
    dtype and ndim, so a kernel made afresh every step would be traced afresh every step."""
    key = (xp, make)
    if key not in _KERNELS:
        _KERNELS[key] = make(xp)
    return _KERNELS[key]


def backend_name(xp):
    """``"numpy"`` or ``"cupy"`` for an array module."""
    return "numpy" if xp is np else "cupy"


def to_numpy(x):
    """Copy an array to the host as a NumPy array (no copy if it is already there)."""
    if get_array_module(x) is np:
        return np.asarray(x)
    return x.get()


def make_rng(seed):
    """A host random generator; draw with it, then move the result with ``xp.asarray``."""
    return np.random.default_rng(seed)


class _HostStream:
    """NumPy's stand-in for a CUDA stream: the CPU runs each thread's work in order anyway."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass


class WorkerHandoff:
    """What a worker thread needs to work on arrays its caller made (minimf/parallel/pipeline.py).

    Made in the calling thread, it remembers two things a new thread would otherwise get wrong
    on a GPU:

    * the caller's current device: CUDA's current device is per thread, and every new thread
      starts on device 0, so after ``cupy.cuda.Device(1).use()`` a worker would launch its
      kernels on device 0 against arrays on device 1;
    * an event recorded on the caller's current stream after everything it has queued so far
      (the data set copied to the device, the batch order, the initial weights, all on the
      default stream): a worker's own non-blocking stream does not wait for the default stream,
      so without this wait it could read a half-copied array.

    ``with handoff.worker_stream() as stream:`` (in the worker) makes the caller's device current,
    and queues the thread's work on a new non-blocking stream that first waits for that event.
    On NumPy both are no-ops.
    """

    def __init__(self, xp):
        self.xp = xp
        if xp is np:
            self.device = self.ready = None
            return
        self.device = xp.cuda.Device().id
        self.ready = xp.cuda.Event()
        self.ready.record()                    # on the caller's current stream

    @contextlib.contextmanager
    def worker_stream(self):
        if self.xp is np:
            yield _HostStream()
            return
        with self.xp.cuda.Device(self.device):
            stream = self.xp.cuda.Stream(non_blocking=True)
            stream.wait_event(self.ready)     # the caller's copies come first
            with stream:
                yield stream
