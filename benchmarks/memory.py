"""Peak memory of ONE training step: Mono-Forward (MF) vs backprop (BP).

    python benchmarks/memory.py                               # MLP, 1 2 4 8 hidden layers of 1000, batch 256
    python benchmarks/memory.py --depths 1 2 --width 200      # a quick look
    python benchmarks/memory.py --arch cnn                    # the paper's CNN, 64-128-256-512
    python benchmarks/memory.py --arch cnn --channels 8 16

What it measures: the peak of the memory ALLOCATED DURING one ``train_step``, on top of what
existed before it: the network's parameters, the optimiser's state and the batch are allocated
before and not counted. Each network is built fresh, takes one warm-up step (so that Adam's m and
v exist), and then the measured step runs between ``tracemalloc.reset_peak()`` and
``tracemalloc.get_traced_memory()``. NumPy reports every array it allocates to tracemalloc, so the
number covers activations, caches, gradients and every temporary array (plus the small Python
objects around them). The inputs are random standard-normal numbers of the right shape with random
labels: how much a step allocates does not depend on the values, and MNIST need not be loaded.

Why MF's peak should not grow with depth: MF trains layer by layer inside the forward pass
(minimf/rules/mono_forward.py). Layer i computes its activations, its local loss, its gradients, updates
itself, and hands only its output a_i to layer i+1; its caches and gradients can be freed before
layer i+1 starts. So a step needs about ONE layer's activations and gradients at a time, whatever
the depth. BP must keep every layer's cache (its input and ReLU output) from the forward pass
until the backward pass comes back down to it, and minimf's BackpropModel computes every layer's
gradient before the optimiser steps: its peak grows by about one layer's cache plus one layer's
gradients per layer. For ``--arch mlp`` the script measures depths 1, 2, 4, 8 (``--depths``) and
fits a line, peak = a + slope * depth, to each rule by least squares: the slopes (MiB per layer)
are the result. (MF v1, arXiv 2501.09238v1, reports slopes on a GPU; they are printed for
orientation only, since the paper measured GPU memory its own way.)

What tracemalloc does NOT see: memory that does not pass through Python's or NumPy's allocators,
above all the work buffers the BLAS library (OpenBLAS, MKL) allocates for itself inside a matrix
product. With ``--backend cupy`` the meter is a memory hook on CuPy's pool instead (the bytes of
GPU arrays in use). The measuring code lives in minimf/experiments/measure.py and is shared with
``python -m minimf.experiments memory``; this script only parses options and prints.
"""
import argparse
import sys

import numpy as np

from minimf import BackpropCNN, BackpropNet, MonoForwardCNN, MonoForwardNet
from minimf.backend import BACKENDS, BackendError, get_backend
from minimf.nn.cnn import block_shapes
from minimf.datasets import DATASETS
from minimf.experiments.measure import (MIB, TracemallocMeter, line_fit, memory_meter, random_batch,
                                        step_peak_bytes)
from minimf.argtypes import positive_int
from minimf.training.config import DEFAULT_CHANNELS

MNIST_IMAGE = DATASETS["mnist"].input_shape   # (1, 28, 28)

NUM_CLASSES = 10
LR = 1e-3
SEED = 0
DEFAULT_DEPTHS = [1, 2, 4, 8]
DEFAULT_WIDTH = 1000
RESOLUTION_MIB = 0.01  # the table's precision; a smaller MF slope gives no meaningful ratio
PAPER_SLOPES = {"BP": 204.00, "MF": 16.16}  # MF v1: MiB per 1000-unit hidden layer, on a GPU


def build_parser():
    p = argparse.ArgumentParser(prog="python benchmarks/memory.py",
                                description="Peak memory of one MF and one BP training step (tracemalloc).")
    p.add_argument("--backend", choices=BACKENDS, default="numpy",
                   help="numpy: host memory by tracemalloc; cupy: GPU memory by a hook on CuPy's pool "
                        "(default: numpy)")
    p.add_argument("--arch", choices=["mlp", "cnn"], default="mlp",
                   help="dense layers on (N, 784), or conv blocks on (N, 1, 28, 28) (default: mlp)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="examples per step (default: 256)")
    p.add_argument("--depths", type=positive_int, nargs="+", default=None, metavar="L",
                   help=f"--arch mlp: numbers of hidden layers to measure, at least two different "
                        f"(default: {' '.join(map(str, DEFAULT_DEPTHS))})")
    p.add_argument("--width", type=positive_int, default=None, metavar="H",
                   help=f"--arch mlp: units per hidden layer (default: {DEFAULT_WIDTH})")
    p.add_argument("--channels", type=positive_int, nargs="+", default=None, metavar="F",
                   help=f"--arch cnn: channels of each conv block "
                        f"(default: {' '.join(map(str, DEFAULT_CHANNELS))}, the paper's)")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    try:
        xp = get_backend(args.backend)
    except BackendError as err:
        parser.error(str(err))
    with memory_meter(xp) as meter:
        if args.arch == "mlp":
            report_mlp(args, xp, meter)
        else:
            report_cnn(args, xp, meter)
    return 0


def check_arguments(parser, args):
    """--depths and --width belong to the MLP, --channels to the CNN; fill in the defaults in use."""
    if args.arch == "mlp":
        if args.channels is not None:
            parser.error("--channels is for --arch cnn; the MLP is set with --depths and --width")
        args.depths = list(DEFAULT_DEPTHS) if args.depths is None else args.depths
        args.width = DEFAULT_WIDTH if args.width is None else args.width
        if len(set(args.depths)) < 2:
            parser.error("--depths needs at least two different depths to fit a slope")
        return
    if args.depths is not None or args.width is not None:
        parser.error("--depths and --width are for --arch mlp; the CNN is set with --channels")
    args.channels = list(DEFAULT_CHANNELS) if args.channels is None else args.channels
    try:
        block_shapes(MNIST_IMAGE, args.channels)
    except ValueError as err:
        parser.error(f"--channels: {err}")


# --- the measurement (minimf/experiments/measure.py) ------------------------------------------------

def mf_bp_peaks(mf, bp, kwargs, x, y, backend, meter):
    """(MF peak, BP peak) in MiB for one step on (x, y), each on a fresh network."""
    return tuple(step_peak_bytes(lambda: kind(**kwargs, num_classes=NUM_CLASSES, backend=backend, seed=SEED,
                                              lr=LR), x, y, meter) / MIB
                 for kind in (mf, bp))


# --- the two architectures -------------------------------------------------------------------------

def report_mlp(args, xp, meter):
    d_in = MNIST_IMAGE[0] * MNIST_IMAGE[1] * MNIST_IMAGE[2]
    x, y = random_batch(args.batch_size, (d_in,), NUM_CLASSES, SEED, xp)
    print_header(f"MLP {d_in} -> depth x {args.width} ReLU -> {NUM_CLASSES} classes "
                 f"(BP adds an output layer; MF a projection per layer)", args.batch_size, meter)
    depths = sorted(set(args.depths))
    print(f"  {'depth':>5} {'MF peak MiB':>12} {'BP peak MiB':>12} {'BP/MF':>7}")
    peaks = {"MF": [], "BP": []}
    for depth in depths:
        print(f"  measuring depth {depth} ...", file=sys.stderr, flush=True)
        mf, bp = mf_bp_peaks(MonoForwardNet, BackpropNet, {"sizes": [d_in] + [args.width] * depth}, x, y,
                             args.backend, meter)
        peaks["MF"].append(mf)
        peaks["BP"].append(bp)
        print(f"  {depth:>5} {mf:>12.2f} {bp:>12.2f} {bp / mf:>7.2f}")
    print()
    print(f"Least-squares line, peak = a + slope * depth (MiB; slope = MiB per {args.width}-unit layer):")
    slopes = {}
    for rule in ("MF", "BP"):
        a, slopes[rule] = line_fit(depths, peaks[rule])
        print(f"  {rule}  a {a:8.2f}   slope {slopes[rule]:8.2f}")
    if slopes["MF"] >= RESOLUTION_MIB:
        print(f"  slope ratio BP/MF {slopes['BP'] / slopes['MF']:.1f}")
    else:
        print(f"  slope ratio BP/MF: none, MF's slope is below {RESOLUTION_MIB} MiB per layer "
              f"(its peak does not grow with depth)")
    paper = PAPER_SLOPES
    print()
    print(f"For orientation only, a different measure: MF v1 reports slopes of BP {paper['BP']:.2f} and "
          f"MF {paper['MF']:.2f} MiB per 1000-unit layer\n  (ratio {paper['BP'] / paper['MF']:.1f}), "
          f"measured on a GPU by the paper's own method, not by this script's meter on one step.")


def report_cnn(args, xp, meter):
    x, y = random_batch(args.batch_size, MNIST_IMAGE, NUM_CLASSES, SEED, xp)
    shapes = block_shapes(MNIST_IMAGE, args.channels)
    maps = "-".join(str(h) for _, h, _ in shapes)
    print_header(f"CNN 1x28x28 -> conv blocks {'-'.join(map(str, args.channels))} (3x3 conv pad 1, ReLU, "
                 f"2x2 avg pool; maps {maps}) -> {NUM_CLASSES} classes", args.batch_size, meter)
    print("  measuring ...", file=sys.stderr, flush=True)
    kwargs = {"input_shape": MNIST_IMAGE, "channels": args.channels}
    mf, bp = mf_bp_peaks(MonoForwardCNN, BackpropCNN, kwargs, x, y, args.backend, meter)
    print(f"  {'MF peak MiB':>12} {'BP peak MiB':>12} {'BP/MF':>7}")
    print(f"  {mf:>12.2f} {bp:>12.2f} {bp / mf:>7.2f}")


def print_header(network, batch_size, meter):
    how = "tracemalloc" if isinstance(meter, TracemallocMeter) else "CuPy pool hook"
    print(f"Peak memory of one training step ({how}): Mono-Forward vs backprop")
    print(f"  numpy     {np.__version__}, float32, Adam lr {LR:g}")
    print(f"  network   {network}")
    print(f"  batch     {batch_size} random standard-normal examples; measured: the peak allocated during")
    print("            one train_step, after one warm-up step, on top of parameters, Adam state and data")
    if how == "tracemalloc":
        print("            (BLAS's own work buffers are not seen)")
    print()


if __name__ == "__main__":
    sys.exit(main())
