"""An experiment's independent trainings side by side in worker processes: ``--jobs N``.

Why: one training does not keep two cores busy. Its matrix products use every BLAS thread, but its
element-wise work (GELU, normalisation, the optimiser's update) runs on one core. Two trainings with
one BLAS thread each make about 1.5 times the steps per second of one training with two
(docs/benchmarks.md, the default Mixer on two cores).

How: before its own loop over a stage's trainings, an experiment names them, ``prefetch(ctx, plans)``,
each plan the keyword arguments of ``common.train_history``. With ``ctx.jobs`` > 1 the plans not yet
in the journal are trained by that many worker processes (each with cpus / jobs BLAS threads, unless
OPENBLAS_NUM_THREADS says otherwise), and each worker keeps every history in the experiment's journal
(journal.py) as it finishes. The experiment's loop, unchanged, then reads them back. With one job
``prefetch`` does nothing, and the loop trains the plans one after another as it reaches them. So an
experiment's code stays the sequential reference, and the report is the same either way: a training
depends only on its settings and seed (tests/test_experiment_workers.py compares the two).

A stop reaches the workers too: Ctrl-C and a scheduler's SIGTERM go to every process of the job, and
a signal to the experiment alone is passed on to its workers; workers whose experiment was killed
outright (SIGKILL) stop by themselves. The trainings finished so far are in the journal, those under
way have a checkpoint of their last finished epoch or step, and ``--resume`` continues.
"""
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from dataclasses import replace

from minimf.experiments.common import run_config, train_history
from minimf.experiments.journal import training_key
from minimf.training.loop import EXIT_INTERRUPTED, Interrupted, sigterm_stops

BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
SIDE_BY_SIDE = ("tune", "mixer", "decomposition")     # the experiments that name their trainings (prefetch)


class WorkerError(RuntimeError):
    """A worker process failed (its own message is above, on the standard error)."""


def prefetch(ctx, plans):
    """Train the ``plans`` (dicts of ``train_history``'s keyword arguments, "algo" among them) that the
    journal does not hold yet, in ``ctx.jobs`` worker processes; nothing with one job or no journal.
    Raises Interrupted when a signal stopped the workers, WorkerError when one failed."""
    if ctx.jobs < 2 or ctx.journal is None:
        return
    todo = [plan for plan in plans if not ctx.journal.path(key_of(ctx, plan)).exists()]
    if not todo:
        return
    todo.sort(key=lambda plan: -plan.get("epochs", 1))   # the longest first: no worker waits long at the end
    epochs = [(key_of(ctx, plan), plan.get("epochs", 1)) for plan in todo]
    jobs = min(ctx.jobs, len(todo))
    queue = plan_queue(todo, jobs)      # held until the workers end: a queue dropped here is gone for them too
    workers = start_workers(ctx, queue, jobs)

    def done():        # epochs finished, kept or under way: one training can take hours on a CPU
        return sum(ctx.journal.epochs_done(key, n) for key, n in epochs)

    with ctx.bar(sum(n for _, n in epochs), f"{ctx.name}, {len(todo)} trainings, {jobs} workers", "epoch",
                 done()) as bar:
        wait_for(workers, lambda: bar.update(done() - bar.n))
        bar.update(done() - bar.n)


SPAWN = multiprocessing.get_context("spawn")         # a fresh interpreter: no BLAS threads forked


def plan_queue(plans, jobs):
    """A queue for worker processes with the ``plans`` in order, then one None ("no more") per worker."""
    queue = SPAWN.Queue()
    for plan in [*plans, *[None] * jobs]:
        queue.put(plan)
    return queue


def start_workers(ctx, queue, jobs):
    """Start ``jobs`` worker processes that train the plans of ``queue``; return them."""
    worker_ctx = replace(ctx, progress=False)
    with blas_threads(max(1, (os.cpu_count() or 1) // ctx.jobs)):
        workers = [SPAWN.Process(target=work, args=(worker_ctx, queue), daemon=True) for _ in range(jobs)]
        for worker in workers:
            worker.start()
    return workers


def key_of(ctx, plan):
    """The journal key of the training ``plan`` describes."""
    training = dict(plan)
    algo, held_out = training.pop("algo"), training.pop("held_out", None)
    return training_key(run_config(ctx, algo, **training), held_out)


def wait_for(workers, every_second):
    """Wait until every worker has stopped, calling ``every_second()`` meanwhile (the progress bar). A stop
    of this process (Ctrl-C, SIGTERM) is passed on to the workers as a SIGTERM, which stops each at the
    end of its step (a worker that had the signal already goes on stopping there). Raises Interrupted
    if a signal stopped a worker, WorkerError if one failed."""
    try:
        for worker in workers:
            while worker.is_alive():
                worker.join(timeout=1)
                every_second()
    except BaseException:
        for worker in workers:
            worker.terminate()                          # SIGTERM
        for worker in workers:
            worker.join()
        raise
    codes = [worker.exitcode for worker in workers]
    for name, code in EXIT_INTERRUPTED.items():
        if code in codes:
            raise Interrupted(0, 0, name)
    failed = [code for code in codes if code != 0]
    if failed:
        raise WorkerError(f"{len(failed)} of {len(workers)} worker processes failed (exit status "
                           f"{', '.join(map(str, failed))}; the message is above); the trainings they "
                           "finished are kept, --resume continues")


def work(ctx, queue):
    """One worker: train the plans taken from ``queue`` until it gives None (each kept in the journal
    by ``train_history``). Exits with EXIT_INTERRUPTED's status when a signal stops it."""
    try:
        with sigterm_stops():
            stop_with_parent()
            while (plan := queue.get()) is not None:
                train_history(ctx, **plan)
    except (Interrupted, KeyboardInterrupt) as stop:
        sys.exit(EXIT_INTERRUPTED[getattr(stop, "signal_name", "SIGINT")])


def stop_with_parent():
    """Send this worker a SIGTERM when the process that started it ends. An experiment that ends in
    order stops its workers itself, but one killed outright (SIGKILL, the out-of-memory killer) cannot:
    its workers would train on alone, unseen, and collide with a ``--resume``. So a thread waits on
    the parent, and the SIGTERM stops the worker at the end of its step, with a checkpoint."""
    parent = multiprocessing.parent_process()

    def watch():
        multiprocessing.connection.wait([parent.sentinel])       # readable once the parent has ended
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()


@contextlib.contextmanager
def blas_threads(threads):
    """Within the block, processes started get ``threads`` BLAS threads (BLAS_THREADS in their
    environment), except where this process's environment already sets a variable."""
    unset = [name for name in BLAS_THREADS if name not in os.environ]
    for name in unset:
        os.environ[name] = str(threads)
    try:
        yield
    finally:
        for name in unset:
            del os.environ[name]
