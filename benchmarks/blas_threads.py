"""The threads of NumPy's BLAS, shared by the benchmark scripts.

threadpoolctl (optional) reads and, for ``--threads T``, limits the threads the BLAS library that
NumPy loaded uses. Without it, a script can still be started with ``OPENBLAS_NUM_THREADS=T``.
"""
import os

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


def blas_threads():
    """(threads NumPy's BLAS uses, where that number came from)."""
    if threadpoolctl is not None:
        blas = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
        if blas:
            return max(blas), "threadpoolctl"
    for var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():  # read by the BLAS when NumPy loaded it
            return int(os.environ[var]), f"${var}"
    hint = "; install threadpoolctl to read the BLAS itself" if threadpoolctl is None else ""
    return os.cpu_count() or 1, f"os.cpu_count(){hint}"
