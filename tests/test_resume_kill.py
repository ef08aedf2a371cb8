"""A training process killed with SIGKILL at random moments (while loading, during a step, during a
checkpoint write, between epochs) and resumed with ``--resume`` until it finishes ends with the
metrics and parameters of the run never killed, bit for bit (issue 17).

SIGKILL cannot be caught: nothing of the run gets to tidy up, so only what was on disk counts. The
kill moments are drawn from a seeded generator between 0.2 s and the uninterrupted run's duration,
so they fall all over the run; each run is killed three times, then left to finish.
"""
import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest

from minimf.run_folder import LOCK

ARGS = ["--train-subset", "3000", "--test-subset", "300", "--batch-size", "100", "--epochs", "3",
        "--hidden", "500", "500", "--no-progress", "--checkpoint-every", "7"]
KILLS = 3
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}     # the same BLAS threads in every process: the same rounding


def run(args):
    return subprocess.Popen([sys.executable, "-m", "minimf.train", *map(str, args)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def without_seconds(path):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads(path.read_text())]


@pytest.mark.parametrize("algo", ["mf", "bp", "ff"])
def test_killed_run_resumed_ends_bit_for_bit(algo, tmp_path):
    argv = ARGS + ["--algo", algo]
    start = time.perf_counter()
    reference = run(argv + ["--out", tmp_path / "uninterrupted"])
    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    duration = time.perf_counter() - start

    folder, moments, kills = tmp_path / "killed", random.Random(algo), []
    for attempt in range(2 * KILLS):
        started = (folder / "config.json").exists()          # killed before config.json: start again
        proc = run(["--resume", folder] if started else argv + ["--out", folder])
        if len(kills) < KILLS:
            time.sleep(moments.uniform(0.2, 0.8 * duration))
            if proc.poll() is None:
                proc.kill()
                kills.append(round(time.perf_counter() - start, 1))
                proc.wait()
                continue
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
        if (folder / "metrics.json").exists() and len(json.loads((folder / "metrics.json").read_text())) == 3:
            break
    print(f"{algo}: killed at {kills} s (the uninterrupted run took {duration:.1f} s)")
    assert kills                 # really interrupted (here 2 or 3 times: a resumed run may finish before its moment)
    assert sorted(p.name for p in folder.rglob(".*")) == [LOCK]   # no half-written file or folder left
    assert without_seconds(folder / "metrics.json") == without_seconds(tmp_path / "uninterrupted" / "metrics.json")
    with np.load(folder / "model.npz") as a, np.load(tmp_path / "uninterrupted" / "model.npz") as b:
        for key in b.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
