"""The threads and the kernel of NumPy's BLAS, shared by the benchmark scripts.

threadpoolctl (optional) reads and, for ``--threads T``, limits the threads the BLAS library that
NumPy loaded uses. Without it, a script can still be started with ``OPENBLAS_NUM_THREADS=T``.

The kernel matters as much as the threads. OpenBLAS picks the matrix-product code written for the
CPU it finds (threadpoolctl calls that choice its "architecture"), unless ``OPENBLAS_CORETYPE``
names one. Some machines set that variable to an older type (with ``OPENBLAS_L2_SIZE``) because
old OpenBLAS builds crashed on their CPUs; NumPy's current OpenBLAS then runs, say, the AVX2
"Haswell" kernel on an AVX-512 CPU (vectors of half the width: down to half the speed of a
product), while PyTorch's MKL still picks its AVX-512 code. So every benchmark prints the kernel, and
``kernel_warning`` says when it is forced.
"""
import contextlib
import os

import numpy as np

from minimf.backend import BLAS_THREAD_VARS, OPENBLAS_KERNEL_VARS

try:
    import threadpoolctl
except ImportError:
    threadpoolctl = None


def run_with_threads(parser, threads, run):
    """Return ``run()``, with NumPy's BLAS limited to ``threads`` threads (None: leave it as it is).

    Without threadpoolctl a thread count is an argparse error that says how else to set it.
    """
    if not threads:
        return run()
    if threadpoolctl is None:
        parser.error("--threads needs threadpoolctl to set NumPy's BLAS threads (pip install threadpoolctl); "
                     "or start the script with OPENBLAS_NUM_THREADS=T and OMP_NUM_THREADS=T")
    with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
        return run()


_controller = None


def one_blas_thread():
    """A context in which NumPy's BLAS runs on one thread: for trainers that start their own
    threads (one per core), so that the threads, not the BLAS, share out the cores. Without
    threadpoolctl it changes nothing (start the script with OPENBLAS_NUM_THREADS=1 instead)."""
    global _controller
    if threadpoolctl is None:
        return contextlib.nullcontext()
    if _controller is None:                  # finding the libraries takes milliseconds: once
        _controller = threadpoolctl.ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def blas_threads():
    """(threads NumPy's BLAS uses, where that number came from)."""
    if threadpoolctl is not None:
        blas = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
        if blas:
            return max(blas), "threadpoolctl"
    for var in BLAS_THREAD_VARS:
        if os.environ.get(var, "").isdigit():  # read by the BLAS when NumPy loaded it
            return int(os.environ[var]), f"${var}"
    hint = "; install threadpoolctl to read the BLAS itself" if threadpoolctl is None else ""
    return os.cpu_count() or 1, f"os.cpu_count(){hint}"


def blas_kernel():
    """One line: NumPy's BLAS library, its version and the CPU type of the kernel it runs, and the
    variables that force that kernel where they are set."""
    forced = "".join(f", {var}={os.environ[var]}" for var in OPENBLAS_KERNEL_VARS if var in os.environ)
    if threadpoolctl is None:
        return f"numpy {np.__version__}; kernel unknown (install threadpoolctl to read it){forced}"
    blas = [lib for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    if not blas:
        return f"numpy {np.__version__}; no BLAS found by threadpoolctl{forced}"
    lib = blas[0]
    return f"{lib['internal_api']} {lib['version']}, kernel {lib.get('architecture') or 'not reported'}{forced}"


def kernel_warning():
    """A warning (a string) when OPENBLAS_CORETYPE forces OpenBLAS's kernel, else ``""``."""
    if "OPENBLAS_CORETYPE" not in os.environ:
        return ""
    return ("  note: OPENBLAS_CORETYPE forces OpenBLAS's kernel, which may be slower than the one it would pick\n"
            "        for this CPU (PyTorch's MKL picks its own). To compare like with like, run:\n"
            "        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/...\n")
