"""--jobs N: an experiment's trainings in worker processes (minimf/experiments/workers.py). The report is
the one the same command writes with one job; the trainings are done by the workers (the experiment's
own loop only reads them back); a stop of the experiment stops its workers and --resume continues; a
worker's failure is a clear error that keeps what was finished."""
import contextlib
import inspect
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiment_helpers import process_env, report_numbers
from minimf.experiments import EXPERIMENTS, common
from minimf.experiments.__main__ import main
from minimf.experiments.common import SCALES, Context
from minimf.experiments.journal import Journal
from minimf.experiments.workers import SIDE_BY_SIDE, WorkerError, blas_threads, prefetch



def no_training_here(*args, **kwargs):
    raise AssertionError("the experiment's own process trained: prefetch left this training to it")


@pytest.mark.parametrize("argv", [["mixer", "--tiny", "--seeds", "0", "1"],
                                  ["tune", "--tiny", "--seeds", "0", "1", "--trials", "2"],
                                  ["decomposition", "--tiny", "--seeds", "0", "1"]],
                         ids=["mixer", "tune", "decomposition"])
def test_two_jobs_write_the_report_of_one(argv, tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(argv + ["--out", str(one), "--no-progress"]) == 0
    monkeypatch.setattr(common, "_train", no_training_here)      # the workers (fresh processes) train
    assert main(argv + ["--out", str(two), "--no-progress", "--jobs", "2"]) == 0
    assert report_numbers(two) == report_numbers(one)
    assert Journal(two).count() == Journal(one).count()
    assert "Resumed" not in (two / "results.md").read_text()      # the workers' trainings are this run's


def test_one_job_trains_in_the_experiments_own_process(tmp_path, monkeypatch):
    """Must fail if prefetch did nothing with --jobs 2: then this process trains, as with one job."""
    monkeypatch.setattr(common, "_train", no_training_here)
    with pytest.raises(AssertionError, match="own process trained"):
        main(["mixer", "--tiny", "--seeds", "0", "--out", str(tmp_path / "one"), "--no-progress"])


def test_a_workers_failure_is_a_clear_error_that_keeps_the_rest(tmp_path, capsys):
    ctx = Context(name="tune", scale=SCALES["tiny"], seeds=[0], journal=Journal(tmp_path), jobs=2)
    plans = [dict(algo="mf", hidden=[8], epochs=1, seed=0),
             dict(algo="mf", hidden=[8], epochs=1, seed=0, held_out=(10 ** 7, 0))]   # more than MNIST holds
    with pytest.raises(WorkerError, match="1 of 2 worker processes failed"):
        prefetch(ctx, plans)
    assert Journal(tmp_path).count() == 1


def test_the_progress_bar_counts_epochs(tmp_path, capsys):
    """The bar over the workers counts epochs (a training of 20 epochs takes hours on a CPU), not trainings."""
    ctx = Context(name="tune", scale=SCALES["tiny"], seeds=[0], journal=Journal(tmp_path), jobs=2, progress=True)
    prefetch(ctx, [dict(algo="mf", hidden=[8], epochs=2, seed=0), dict(algo="mf", hidden=[8], epochs=1, seed=1)])
    last_draw = capsys.readouterr().err.split("\r")[-1]
    assert "tune, 2 trainings, 2 workers: 100%" in last_draw
    assert re.search(r"3/3 \[.*(epoch/s|s/epoch)\]", last_draw), last_draw      # epochs (2 + 1), not trainings


def test_epochs_done_reads_a_training_under_way(tmp_path):
    journal, key = Journal(tmp_path), {"a training": 1}
    assert journal.epochs_done(key, 5) == 0                      # not started
    journal.partial(key).mkdir(parents=True)
    metrics = journal.partial(key) / "metrics.json"
    metrics.write_text('[{"epoch": 1}, {"epoch": 2}]')
    assert journal.epochs_done(key, 5) == 2                      # two epochs finished, checkpointed
    metrics.write_text('[{"epoch": 1}, {"ep')
    assert journal.epochs_done(key, 5) == 0                      # unreadable: counted as none yet
    journal.keep(key, [{"epoch": e} for e in range(1, 6)])
    assert journal.epochs_done(key, 5) == 5                      # kept


def test_jobs_is_refused_where_trainings_run_one_after_another(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["mlp", "--tiny", "--jobs", "2", "--out", str(tmp_path / "mlp")])
    assert exit_info.value.code == 2 and "--jobs is an option of tune, mixer, decomposition" in capsys.readouterr().err
    assert not (tmp_path / "mlp").exists()
    assert main(["prediction", "--tiny", "--jobs", "1", "--out", str(tmp_path / "one"), "--no-progress"]) == 0


def test_side_by_side_names_the_experiments_that_prefetch():
    """SIDE_BY_SIDE, which --jobs is checked against, is the list of experiments whose module names its
    trainings for the workers (an experiment that starts to prefetch must be added to it)."""
    prefetching = {name for name, run in EXPERIMENTS.items()
                   if "prefetch(" in inspect.getsource(inspect.getmodule(run))}
    assert prefetching == set(SIDE_BY_SIDE)


def test_workers_get_their_share_of_blas_threads_unless_told(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    with blas_threads(1):
        assert os.environ["OPENBLAS_NUM_THREADS"] == "1" and os.environ["OMP_NUM_THREADS"] == "3"
    assert "OPENBLAS_NUM_THREADS" not in os.environ and os.environ["OMP_NUM_THREADS"] == "3"


def test_a_sigterm_to_the_experiment_stops_its_workers(tmp_path):
    out = tmp_path / "stopped"
    env = process_env()
    argv = ["mixer", "--tiny", "--seeds", "0", "1", "2", "--no-progress"]
    process = subprocess.Popen([sys.executable, "-m", "minimf.experiments", *argv, "--out", str(out),
                                "--jobs", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while Journal(out).count() == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)                               # the experiment alone, not its workers
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    kept = Journal(out).count()
    assert kept >= 1 and "continue with" in err
    time.sleep(1)
    assert Journal(out).count() == kept, "a worker went on training after the experiment stopped"
    resumed = subprocess.run([sys.executable, "-m", "minimf.experiments", "mixer", "--resume", str(out),
                              "--no-progress", "--jobs", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr


KILLED_PARENT = """
import sys
from minimf.experiments.common import SCALES, Context
from minimf.experiments.journal import Journal
from minimf.experiments.workers import prefetch
ctx = Context(name="tune", scale=SCALES["tiny"], seeds=[0], journal=Journal(sys.argv[1]), jobs=2, progress=False)
prefetch(ctx, [dict(algo="mf", hidden=[8], epochs=10 ** 6, seed=seed) for seed in (0, 1)])
"""


def workers_of(pid):
    """The worker processes (multiprocessing's spawn_main) that process ``pid`` started."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    workers = []
    for child in found:
        with contextlib.suppress(FileNotFoundError):              # a child that has just ended
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(int(child))
    return workers


def running(pid):
    """True while ``pid`` is a process that has not ended (a zombie has)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_workers_stop_when_the_experiment_is_killed_outright(tmp_path):
    """SIGKILL gives the experiment no chance to stop its workers: they must notice and stop themselves,
    not train on alone (must fail without workers.stop_with_parent: they are still running a minute on),
    and each stops as a SIGTERM stops a training: at the end of its step, saying so."""
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err:               # the workers keep writing here after the parent has gone
        parent = subprocess.Popen([sys.executable, "-c", KILLED_PARENT, str(tmp_path / "experiment")],
                                  env=process_env(), stderr=err)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("experiment/partial/*/metrics.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(list(tmp_path.glob("experiment/partial/*/metrics.json"))) == 2, "both workers are training"
        workers = workers_of(parent.pid)
        assert len(workers) == 2
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 60
        while any(map(running, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(running, workers)), "workers trained on after the experiment was killed"
        assert stderr.read_text().count("SIGTERM: stopping after the current step") == 2, stderr.read_text()
    finally:
        for pid in [parent.pid, *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
