"""Prediction time and parameter count of every prediction method on one network (MF v1's Table 4).

    python benchmarks/prediction_time.py                     # 784-1000-1000, 10,000 test images
    python benchmarks/prediction_time.py --repeats 5 --single 500
    python benchmarks/prediction_time.py --hidden 200 200 --repeats 1   # a quick look
    python benchmarks/prediction_time.py --backend cupy

What it measures, for the same hidden layers 784 -> 1000 -> 1000 (ReLU, float32, no biases: the
paper's parameter counts) under five prediction methods:

    BP               BackpropNet: the hidden layers, then an output layer 1000 -> 10
    MF, BP mode      MonoForwardNet, argmax of the last layer's goodness G_L = a_L M_L^T
    MF, FF mode      MonoForwardNet, argmax of the sum of every layer's goodness
    FF, all labels   ForwardForwardNet, each of the C labels written into the image in turn:
                     C forward passes, argmax of the goodness summed over layers
    FF, one pass     ForwardForwardNet, the neutral label, one forward pass, the softmax read-out
                     on the normalised activities of both layers (2000 -> 10)

"single" is the time of one ``predict`` call on one example (the median over ``--single``
examples, in every repeat); "batch" the time of one ``predict`` call on all ``--batch``
test images (the median over the repeats). The repeats are interleaved (every method once, then
again), so a noisy moment of the shared machine hits all of them alike. The networks and the timer
are in minimf/experiments/measure.py, shared with ``python -m minimf.experiments prediction``. The networks are
untrained: prediction costs the same whatever the weights are, so no training is needed.

How to read it: the ratios to BP are the result. The FLOP ratio (the multiply-adds of the matrix
products) says what the arithmetic alone predicts. One example is far too little work to keep the
BLAS busy, so single-example times are mostly Python and call overhead: there the number of
operations matters more than their size (FF with all labels loops over the C labels).
minimf's MF computes every layer's goodness in BP mode too (the earlier G_i are dropped): C*H
extra multiply-adds per layer, under 1% here.
"""
import argparse
import os
import platform
import statistics
import sys

import numpy as np

from minimf.backend import BACKENDS, BackendError, get_backend
from minimf.datasets import MNIST_MEAN, MNIST_STD, load
from minimf.experiments.measure import device_sync, prediction_methods, prediction_times
from minimf.argtypes import positive_int
from minimf.training.config import DEFAULT_HIDDEN

from blas_threads import blas_kernel, blas_threads, kernel_warning, run_with_threads  # benchmarks/blas_threads.py, beside this script

NUM_CLASSES = 10
SEED = 0


def build_parser():
    p = argparse.ArgumentParser(prog="python benchmarks/prediction_time.py",
                                description="Time single-example and batch prediction of BP, MF and FF.")
    p.add_argument("--backend", choices=BACKENDS, default="numpy", help="array library (default: numpy)")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=list(DEFAULT_HIDDEN), metavar="H",
                   help=f"hidden layer widths (default: {' '.join(map(str, DEFAULT_HIDDEN))}, the paper's)")
    p.add_argument("--batch", type=positive_int, default=10000,
                   help="test images in the batch prediction (at most 10000; default: 10000)")
    p.add_argument("--single", type=positive_int, default=200,
                   help="single-example predictions per repeat, their median is taken (default: 200)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="interleaved repeats, the median is reported (default: 3)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="T",
                   help="threads for NumPy's BLAS (needs threadpoolctl; default: leave as is)")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch > 10000:
        parser.error(f"--batch: MNIST has 10000 test images, got {args.batch}")
    try:
        xp = get_backend(args.backend)
    except BackendError as err:
        parser.error(str(err))
    return run_with_threads(parser, args.threads, lambda: run(args, xp))


def run(args, xp):
    test = load("mnist", "test", flatten=True)
    x = xp.asarray((test.x[:args.batch] - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD), dtype="float32")
    sizes = [x.shape[1]] + list(args.hidden)
    methods = prediction_methods(sizes, args.backend, NUM_CLASSES, SEED)
    print_header(args, sizes)
    single, batch = prediction_times(methods, x, args.single, args.repeats, device_sync(xp))
    print_table(methods, single, batch, args.batch)
    return 0


def print_header(args, sizes):
    machine = platform.processor() or platform.machine()
    print("Prediction time on MNIST (MF v1, Table 4): BP, Mono-Forward, Forward-Forward")
    threads, threads_source = (args.threads, "--threads") if args.threads else blas_threads()
    print(f"  machine   {machine}, {os.cpu_count()} CPUs, numpy {np.__version__}, backend {args.backend}, "
          f"BLAS threads {threads} (from {threads_source})")
    print(f"  BLAS      {blas_kernel()}")
    print(f"  network   {'-'.join(map(str, sizes))} ReLU, no biases, float32, untrained (time does not "
          f"depend on the weights)")
    print(f"  timed     single: median of {args.single} one-example calls; batch: one call on "
          f"{args.batch} test images; {args.repeats} interleaved repeat(s), median shown")
    print(kernel_warning())


def print_table(methods, single, batch, n):
    """method | parameters | single ms | batch s | ratios to BP (single, batch, multiply-adds)."""
    median = lambda d: {k: statistics.median(v) for k, v in d.items()}
    single, batch = median(single), median(batch)
    bp = methods[0]
    print(f"  {'method':<16} {'parameters':>10} {'single ms':>10} {f'batch s ({n})':>15}"
          f" {'single/BP':>10} {'batch/BP':>9} {'MACs/BP':>8}")
    for m in methods:
        print(f"  {m.name:<16} {m.params:>10,} {1e3 * single[m.name]:>10.3f} {batch[m.name]:>15.3f}"
              f" {single[m.name] / single[bp.name]:>10.2f} {batch[m.name] / batch[bp.name]:>9.2f}"
              f" {m.macs / bp.macs:>8.2f}")
    print()
    print("Ratios to BP are the result (below 1: faster than BP); MACs/BP is what the matrix products")
    print("alone predict. Parameters: those the method needs for prediction.")


if __name__ == "__main__":
    sys.exit(main())
