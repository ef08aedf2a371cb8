"""The threads of NumPy's BLAS, shared by the benchmark scripts.

threadpoolctl (optional) reads and, for ``--threads T``, limits the threads the BLAS library that
NumPy loaded uses. Without it, a script can still be started with ``OPENBLAS_NUM_THREADS=T``.
"""
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
