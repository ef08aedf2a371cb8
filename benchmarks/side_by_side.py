"""Trainings side by side: why ``python -m minimf.experiments NAME --jobs 2`` pays on a CPU.

    python benchmarks/side_by_side.py                          # MF's default Mixer, batch 256, 20 steps
    python benchmarks/side_by_side.py --steps 3 --batch-size 32 --rounds 1    # a quick look

A training keeps every core busy only in its matrix products (the BLAS threads); its element-wise
work (GELU, normalisation, the optimiser's update) runs on one core. Each round times STEPS training
steps of the same network in two arrangements, one after the other:

* ``one``: one process with one BLAS thread per core;
* ``side by side``: JOBS processes started together (default: one per core), each with cores/JOBS
  BLAS threads, as ``--jobs`` starts its workers (minimf/experiments/workers.py).

Each process prints its seconds per step; the script prints them and the steps per second of all the
processes together, relative to ``one``. Read the ratio of a quiet machine: anything else running
takes cores from both arrangements, not alike.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

from minimf.argtypes import positive_int

ROOT = Path(__file__).resolve().parents[1]
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

# One process's work: STEPS steps of the network after two to warm up; prints seconds per step.
STEPS = """
import sys, time
import numpy as np
from minimf.rules.mixer import BackpropMixer, MonoForwardMixer
algo, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
net = (MonoForwardMixer if algo == "mf" else BackpropMixer)(seed=0, lr=1e-3)
rng = np.random.default_rng(0)
x, y = rng.random((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch)
for _ in range(2):
    net.train_step(x, y)
start = time.perf_counter()
for _ in range(steps):
    net.train_step(x, y)
print((time.perf_counter() - start) / steps)
"""


def build_parser():
    p = argparse.ArgumentParser(prog="python benchmarks/side_by_side.py",
                                description="Steps per second of one training against trainings side by side.")
    p.add_argument("--algo", choices=["mf", "bp"], default="mf", help="the rule trained (default: mf)")
    p.add_argument("--steps", type=positive_int, default=20, help="timed steps per process (default: 20)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="examples per step (default: 256)")
    p.add_argument("--jobs", type=positive_int, default=os.cpu_count() or 1,
                   help="processes side by side (default: one per core)")
    p.add_argument("--rounds", type=positive_int, default=2, help="rounds of both arrangements (default: 2)")
    return p


def seconds_per_step(args, processes, threads):
    """Start ``processes`` copies of STEPS together, each with ``threads`` BLAS threads; their
    seconds per step."""
    env = {**os.environ, **{name: str(threads) for name in BLAS_THREADS},
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", STEPS, args.algo, str(args.steps), str(args.batch_size)]
    running = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    outputs = [process.communicate()[0] for process in running]
    if any(process.returncode for process in running):
        raise RuntimeError("a timing process failed; its message is above")
    return [float(output) for output in outputs]


def main(argv=None):
    args = build_parser().parse_args(argv)
    cores = os.cpu_count() or 1
    threads = max(1, cores // args.jobs)
    print(f"{args.algo.upper()} Mixer (default size), batch {args.batch_size}, {args.steps} steps per process, "
          f"{cores} cores")
    for number in range(1, args.rounds + 1):
        alone = seconds_per_step(args, 1, cores)[0]
        together = seconds_per_step(args, args.jobs, threads)
        rate = sum(1 / s for s in together) * alone
        print(f"round {number}: one process, {cores} BLAS threads: {alone:.3f} s/step; {args.jobs} side by side, "
              f"{threads} each: {' '.join(f'{s:.3f}' for s in together)} s/step; steps per second x{rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
