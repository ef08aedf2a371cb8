"""How long one MNIST training epoch takes with Mono-Forward (MF) and with backprop (BP).

    python benchmarks/epoch_time.py                          # 2x1000 ReLU, batch 256, 3 repeats
    python benchmarks/epoch_time.py --fraction 0.1 --repeats 5
    python benchmarks/epoch_time.py --backend cupy

What it measures: the wall-clock seconds of one epoch of ``train_step`` calls (real MNIST,
standardised, one fixed shuffled order, Adam lr 1e-3, float32) for three configurations in the
same process:

    MF (minimf)          MonoForwardNet: every layer learns from its own loss, no backward pass
    BP (minimf)          BackpropNet: the same hidden layers plus an output layer, one loss, backprop
    BP (PyTorch, CPU)    the same BP network in PyTorch, if ``import torch`` works (never required)

PyTorch gets as many threads as NumPy's BLAS uses, so both libraries have the same cores. Each
timing starts from a fresh network, after a few warm-up steps; the repeats are interleaved (MF, BP,
PyTorch, MF, BP, PyTorch, ...) so that a noisy moment of the machine hits every configuration
alike, and the table shows the median.

How to read it: the RATIOS at the end are the result; the seconds depend on the machine and on
whatever else it is doing. "MF/BP (minimf)" below 1 means MF trains faster than BP in the same
library. Compare it with the matrix-product FLOP ratio printed above it: MF skips every input
gradient but pays for a projection M in each layer. "minimf-BP/PyTorch-BP" says how far the
NumPy teaching code is from a production library on the same arithmetic.
"""
import argparse
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable, NamedTuple

import numpy as np

from minimf import BackpropNet, MonoForwardNet
from minimf.backend import BACKENDS, BackendError, get_backend, make_rng
from minimf.datasets import MNIST_MEAN, MNIST_STD, load_mnist
from minimf.train import positive_int

try:  # optional: reads (and with --threads sets) the threads of NumPy's BLAS
    import threadpoolctl
except ImportError:
    threadpoolctl = None

NUM_CLASSES = 10
LR = 1e-3
SEED = 0
WARMUP_STEPS = 3


class Config(NamedTuple):
    """One thing to time: ``make_step()`` builds a fresh network and returns ``step(idx)``, which
    trains on the examples ``idx``; ``batches`` are that framework's index arrays, in order."""
    name: str
    make_step: Callable
    batches: list
    sync: Callable


def fraction(text):
    """argparse type: a float in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def build_parser():
    p = argparse.ArgumentParser(prog="python benchmarks/epoch_time.py",
                                description="Time one MNIST epoch of MF and BP; print the ratios.")
    p.add_argument("--backend", choices=BACKENDS, default="numpy",
                   help="minimf's array library (default: numpy)")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=[1000, 1000], metavar="H",
                   help="hidden layer widths (default: 1000 1000)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="examples per step (default: 256)")
    p.add_argument("--fraction", type=fraction, default=1.0,
                   help="time only this fraction of an epoch's steps (default: 1.0)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="timings per configuration, interleaved; the median is reported (default: 3)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="T",
                   help="threads for NumPy's BLAS and PyTorch (needs threadpoolctl; default: leave as is)")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        xp = get_backend(args.backend)
    except BackendError as err:
        parser.error(str(err))
    if args.threads and threadpoolctl is None:
        parser.error("--threads needs threadpoolctl to set NumPy's BLAS threads (pip install threadpoolctl); "
                     "or start the script with OPENBLAS_NUM_THREADS=T and OMP_NUM_THREADS=T")
    if args.threads:
        with threadpoolctl.threadpool_limits(limits=args.threads, user_api="blas"):
            return run(args, xp)
    return run(args, xp)


def run(args, xp):
    """Prepare data and networks, time them, print the report. Returns the exit status 0."""
    threads, threads_source = (args.threads, "--threads") if args.threads else blas_threads()
    torch = import_torch()
    if torch is not None:
        torch.set_num_threads(threads)
    x, y = standardised_mnist()
    order = make_rng(SEED).permutation(len(y))
    steps_per_epoch = math.ceil(len(y) / args.batch_size)
    steps = math.ceil(args.fraction * steps_per_epoch)
    sizes = [x.shape[1]] + list(args.hidden)
    configs = minimf_configs(xp, args.backend, sizes, x, y, order, args.batch_size)
    if torch is not None:
        configs.append(torch_config(torch, sizes, x, y, order, args.batch_size))

    print_header(args, sizes, threads, threads_source, torch, steps, steps_per_epoch)
    seconds = time_interleaved(configs, steps, args.repeats)
    print_table(seconds, steps, args.fraction)
    mf_flops, bp_flops = matmul_flops_per_example(sizes, NUM_CLASSES)
    print_flops(mf_flops * len(y), bp_flops * len(y), len(y))
    print_ratios(seconds, mf_flops / bp_flops)
    return 0


# --- the machine ---------------------------------------------------------------------------------

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


def import_torch():
    """The torch module, or None where it is not installed. Never imported at module level:
    minimf does not depend on PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    return torch


# --- the data and the three configurations ---------------------------------------------------------

def standardised_mnist():
    """The 60000 MNIST training examples as host arrays: x (N, 784) float32 with mean 0 and std 1
    (MNIST_MEAN, MNIST_STD), y (N,) int64."""
    train = load_mnist().train
    x = (train.x - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    return x.astype(np.float32, copy=False), train.y


def epoch_batches(order, batch_size):
    """The index arrays of one epoch's batches, in the order ``order`` (the last may be short)."""
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def minimf_configs(xp, backend, sizes, x, y, order, batch_size):
    """MF and BP in minimf. The data moves to the backend here, once, before any timing."""
    x, y, order = xp.asarray(x), xp.asarray(y), xp.asarray(order)
    sync = xp.cuda.Device().synchronize if backend == "cupy" else (lambda: None)

    def maker(kind):
        def make_step():
            net = kind(sizes=sizes, num_classes=NUM_CLASSES, backend=backend, seed=SEED, lr=LR)
            return lambda idx: net.train_step(x[idx], y[idx])
        return make_step

    batches = epoch_batches(order, batch_size)
    return [Config("MF (minimf)", maker(MonoForwardNet), batches, sync),
            Config("BP (minimf)", maker(BackpropNet), batches, sync)]


def torch_config(torch, sizes, x, y, order, batch_size):
    """The BP network in PyTorch on the CPU: Linear+ReLU per hidden layer, a Linear output layer,
    CrossEntropyLoss, Adam. ``torch.from_numpy`` shares the host arrays, nothing is copied."""
    x, y, order = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(order)

    def make_step():
        torch.manual_seed(SEED)
        widths = sizes + [NUM_CLASSES]
        layers = []
        for d_in, width in zip(widths[:-1], widths[1:]):
            layers += [torch.nn.Linear(d_in, width), torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers[:-1])  # no ReLU after the output layer
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step(idx):
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            return loss.item()  # a Python float, as minimf's train_step returns
        return step

    return Config("BP (PyTorch, CPU)", make_step, epoch_batches(order, batch_size), lambda: None)


# --- timing ----------------------------------------------------------------------------------------

def time_once(config, steps):
    """Seconds for the first ``steps`` batches of an epoch, on a fresh network after a warm-up."""
    step = config.make_step()
    for idx in config.batches[:WARMUP_STEPS]:
        step(idx)
    config.sync()
    start = time.perf_counter()
    for idx in config.batches[:steps]:
        step(idx)
    config.sync()  # a GPU may still be working when the last call returns
    return time.perf_counter() - start


def time_interleaved(configs, steps, repeats):
    """{name: [seconds, one per repeat]}, taking the configurations in turn in every repeat."""
    seconds = {config.name: [] for config in configs}
    for repeat in range(1, repeats + 1):
        for config in configs:
            print(f"  repeat {repeat}/{repeats}: {config.name} ...", file=sys.stderr, flush=True)
            seconds[config.name].append(time_once(config, steps))
    return seconds


# --- arithmetic ------------------------------------------------------------------------------------

def matmul_flops_per_example(sizes, num_classes):
    """FLOPs of the matrix products in one training step, per example: (MF, BP).

    A product (N, D) @ (D, H) costs 2*N*D*H FLOPs, so 2*D*H per example. For a layer D -> H with
    C classes:
        MF: forward x W, goodness a M^T, dM = dG^T a, da = dG M, dW = x^T dz
            = 2*(2DH) + 3*(2HC); no input gradient, the error stops at the layer.
        BP: forward, dW, and dx = dz W^T for every layer but the first = 2DH * (2 or 3);
            plus the output layer H_L -> C: forward, dW, dx = 3*(2 H_L C).
    ReLU, softmax and Adam are left out: elementwise work, small next to the products.
    """
    layers = list(zip(sizes[:-1], sizes[1:]))
    mf = sum(2 * (2 * d * h) + 3 * (2 * h * num_classes) for d, h in layers)
    bp = sum((2 if i == 0 else 3) * (2 * d * h) for i, (d, h) in enumerate(layers))
    bp += 3 * (2 * sizes[-1] * num_classes)
    return mf, bp


# --- output ----------------------------------------------------------------------------------------

def print_header(args, sizes, threads, threads_source, torch, steps, steps_per_epoch):
    machine = platform.processor() or platform.machine()
    widths = "-".join(str(s) for s in sizes)
    print("One MNIST training epoch: Mono-Forward vs backprop")
    print(f"  machine   {machine}, {os.cpu_count()} CPUs")
    print(f"  numpy     {np.__version__}, BLAS threads {threads} (from {threads_source})")
    if torch is None:
        print("  torch     not installed: no PyTorch baseline, minimf ratios only")
    else:
        print(f"  torch     {torch.__version__}, CPU, torch.set_num_threads({threads})")
    gpu_note = "   (PyTorch still runs on the CPU)" if torch is not None and args.backend == "cupy" else ""
    print(f"  backend   {args.backend}{gpu_note}")
    print(f"  network   {widths} ReLU -> {NUM_CLASSES} classes, float32, Adam lr {LR:g}")
    print(f"  batch     {args.batch_size}, {steps_per_epoch} steps per epoch")
    part = "a full epoch" if args.fraction == 1 else f"fraction {args.fraction:g} of an epoch"
    print(f"  timed     {part}: {steps} steps after {WARMUP_STEPS} warm-up steps, "
          f"{args.repeats} interleaved repeat(s), median shown")
    print()


def print_table(seconds, steps, fraction):
    """configuration | median seconds | spread (max - min over the median) | steps."""
    heading = "median s / " + ("epoch" if fraction == 1 else f"{fraction:g} epoch")
    w = len(heading)
    print(f"  {'configuration':<20} {heading} {'spread':>8} {'steps':>6}")
    for name, times in seconds.items():
        median = statistics.median(times)
        spread = f"{100 * (max(times) - min(times)) / median:.0f}%" if len(times) > 1 else "-"
        print(f"  {name:<20} {median:>{w}.3f} {spread:>8} {steps:>6}")
    print()


def print_flops(mf, bp, examples):
    print(f"Arithmetic (matrix products only), one epoch of {examples} examples:")
    print(f"  MF {mf / 1e9:.1f} GFLOP, BP {bp / 1e9:.1f} GFLOP, MF/BP {mf / bp:.2f}")
    print()


def print_ratios(seconds, flop_ratio):
    """The headline: time of one configuration over another's (below 1: the first is faster)."""
    median = {name: statistics.median(times) for name, times in seconds.items()}
    print("Ratios of median times (the result; below 1 means the first is faster):")
    print(f"  MF/BP (minimf)           {median['MF (minimf)'] / median['BP (minimf)']:.2f}"
          f"   (matrix-product FLOP ratio {flop_ratio:.2f})")
    torch_bp = median.get("BP (PyTorch, CPU)")
    if torch_bp is not None:
        print(f"  MF/PyTorch-BP            {median['MF (minimf)'] / torch_bp:.2f}")
        print(f"  minimf-BP/PyTorch-BP     {median['BP (minimf)'] / torch_bp:.2f}")


if __name__ == "__main__":
    sys.exit(main())
