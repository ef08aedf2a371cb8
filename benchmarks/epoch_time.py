"""How long one MNIST training epoch takes with Mono-Forward (MF) and with backprop (BP).

    python benchmarks/epoch_time.py                          # MLP 2x1000 ReLU, batch 256, 3 repeats
    python benchmarks/epoch_time.py --fraction 0.1 --repeats 5
    python benchmarks/epoch_time.py --arch cnn --fraction 0.05   # the paper's CNN, 64-128-256-512
    python benchmarks/epoch_time.py --arch cnn --channels 16 32 --fraction 0.05
    python benchmarks/epoch_time.py --backend cupy          # on a GPU, with PyTorch-CUDA rows
    python benchmarks/epoch_time.py --backend cupy --json times.json   # also the seconds and ratios as JSON

What it measures: the wall-clock seconds of one epoch of training (real MNIST, standardised, one
fixed shuffled order, Adam lr 1e-3, float32) for these configurations in the same process:

    MF (minimf)          MonoForwardNet / MonoForwardCNN: every layer learns from its own loss
                         (its projection M_i), no backward pass
    BP (minimf)          BackpropNet / BackpropCNN: the same hidden layers plus an output layer,
                         one loss, backprop
    BP (PyTorch, CPU)    the same BP network in PyTorch, if ``import torch`` works (never required)
    BP (PyTorch, CUDA)   with ``--backend cupy`` where ``torch.cuda.is_available()``, in place of the
                         CPU row: the same BP network in PyTorch on the GPU
    MF (PyTorch, CUDA)   ... and MF in PyTorch on the GPU: every layer (Linear + ReLU, or a conv
                         block) with its own projection M_i (C, n_i), goodness G_i = a_i M_i^T, its
                         own cross-entropy and its own Adam; its input detached, so no gradient
                         crosses layers (the minimf MF rule, written the way PyTorch users would)
    MF pipelined         MF with its layers running concurrently, one thread each
                         (minimf/parallel/pipeline.py; the same numbers as MF, only the timing differs)
    MF unit-split        MF with every layer's units shared out between T threads, T = the BLAS
                         threads of the other rows (minimf/parallel/unit_split.py; MLP on NumPy only; the
                         same numbers up to float rounding)
    MF / BP batch-split  every batch's examples shared out between T threads, in parts of
                         ``--micro-batch`` examples (minimf/parallel/batch_split.py; NumPy only; the same
                         numbers up to float rounding)
    MF / BP products     the lower bound: only the matrix products of every MF (or BP) step, at
                         the network's shapes, on random float32 arrays (``step_products``)

``--arch mlp`` (the default) uses dense ReLU layers (``--hidden``) on (N, 784); ``--arch cnn`` uses
conv blocks (``--channels``; 3x3 conv with padding 1 -> ReLU -> 2x2 average pooling, floor:
28 -> 14 -> 7 -> 3 -> 1) on (N, 1, 28, 28), and in PyTorch Conv2d -> ReLU -> AvgPool2d(2) per
block, then Flatten and one Linear output layer, as BackpropCNN. A CNN epoch takes minutes in
NumPy: ``--fraction`` times only the first part of the epoch, and the output says which part.

The PyTorch GPU rows get the data copied to the GPU once and gather every batch there with a device
index array, as minimf does on CuPy; each timing is closed by ``torch.cuda.synchronize()``, as
minimf's by CuPy's device synchronisation. Their steps keep the loss on the GPU (no host sync per
step), as minimf's do on CuPy, where they also skip the value checks (``validate=False``, the data
checked once before timing, as the command line does). TF32 is switched off for PyTorch's matrix
products and cuDNN's convolutions (cuDNN's default is on), so that both libraries compute in
float32 (CuPy uses TF32 only with CUPY_TF32=1).
``--json FILE`` writes the seconds of every repeat and every ratio (with its target) to FILE,
atomically (a temporary file renamed over it).

PyTorch gets as many threads as NumPy's BLAS uses, so both libraries have the same cores. The
parallel trainers run their own threads, each with ONE BLAS thread (threadpoolctl), so that they
share out the same cores instead of fighting over them: unit-split and batch-split use T threads on
T cores; the pipeline one thread per layer, whatever T is (with T = 1 it uses more cores than the
others). Each timing starts from a fresh network, after a few warm-up steps; the repeats are
interleaved (MF, BP, PyTorch, MF, BP, PyTorch, ...) so that a noisy moment of the machine hits every configuration
alike, and the table shows the median.

How to read it: the RATIOS at the end are the result; the seconds depend on the machine and on
whatever else it is doing. "MF/BP (minimf)" below 1 means MF trains faster than BP in the same
library. Compare it with the FLOP ratio printed above it (matrix products and convolutions): MF
skips every input gradient but pays for a projection M in each layer. "minimf-BP/PyTorch-BP" says
how far the NumPy teaching code is from a production library on the same arithmetic (TARGETS: at
most 1 for the MLP, 1.5 for the CNN). "MF/MF-products" is the distance from the arithmetic lower
bound: the epoch against its matrix products alone, measured at the same shapes in the same run,
i.e. the epoch's FLOPs divided by this machine's GFLOP/s at those shapes (printed too). What MF
does beside its products (ReLU, softmax, Adam, batching, checks, Python) is the difference.

The table's last column counts minor page faults per step: first touches of memory the allocator
had to get fresh from the OS instead of reusing a freed block (glibc returns freed blocks above its
mmap threshold, at most 32 MiB, straight to the OS, so the CNN's im2col matrices come fresh every
step). They are cheap on most machines, but not on every one: in a virtual machine they can cost time
while OpenBLAS's idle worker thread spins (two or more BLAS threads). docs/benchmarks.md
gives the allocator settings that avoid them (they change the process, PyTorch included, not minimf).
"""
import argparse
import atexit
import math
import os
import platform
import statistics
import sys
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

try:
    import resource   # Unix: the process's page-fault count
except ImportError:
    resource = None

from minimf import BackpropCNN, BackpropNet, MonoForwardCNN, MonoForwardNet
from minimf.backend import BACKENDS, BackendError, get_backend, make_rng
from minimf.nn.cnn import KERNEL, block_shapes
from minimf.datasets import DATASETS, MNIST_MEAN, MNIST_STD, load
from minimf.experiments.measure import device_sync, interleaved, seconds_of
from minimf.files import atomic_write_json
from minimf.parallel.pipeline import train_pipelined
from minimf.parallel.unit_split import train_unit_split
from minimf.parallel.batch_split import train_batch_split
from minimf.argtypes import positive_int
from minimf.training.config import DEFAULT_CHANNELS, DEFAULT_HIDDEN, ConfigError, architecture_widths

MNIST_IMAGE = DATASETS["mnist"].input_shape   # (1, 28, 28)

from blas_threads import (blas_kernel, blas_threads, kernel_warning, one_blas_thread,  # benchmarks/blas_threads.py,
                          run_with_threads, threadpoolctl)                               # beside this script

NUM_CLASSES = 10
LR = 1e-3
SEED = 0
WARMUP_STEPS = 3
# the targets, "ratio: at most this", per architecture
TARGETS = {"mlp": {"MF/PyTorch-BP": 0.65, "minimf-BP/PyTorch-BP": 1.0, "MF/MF-products": 1.5,
                   "MF-unit-split/MF-products": 1.5, "MF-unit-split/PyTorch-BP": 0.65,
                   "MF-pipelined/MF-products": 1.5, "MF-pipelined/PyTorch-BP": 0.65,
                   "MF-batch-split/MF-products": 1.5, "MF-batch-split/PyTorch-BP": 0.65,
                   "BP-batch-split/PyTorch-BP": 1.0},
           "cnn": {"MF/PyTorch-BP": 1.5, "minimf-BP/PyTorch-BP": 1.5, "MF/MF-products": 1.5,
                   "MF-pipelined/PyTorch-BP": 1.5, "MF-batch-split/PyTorch-BP": 1.5,
                   "BP-batch-split/PyTorch-BP": 1.5}}
# (the parallel trainers' rows share their rule's targets: they are the same training on the same cores)
# On a GPU, against PyTorch on the same GPU: (label, first row, second row), and the targets
GPU_RATIOS = [("MF (minimf, cupy) / BP (PyTorch, CUDA)", "MF (minimf)", "BP (PyTorch, CUDA)"),
              ("BP (minimf, cupy) / BP (PyTorch, CUDA)", "BP (minimf)", "BP (PyTorch, CUDA)"),
              ("MF pipelined / BP (PyTorch, CUDA)", "MF pipelined", "BP (PyTorch, CUDA)"),
              ("MF (PyTorch, CUDA) / BP (PyTorch, CUDA)", "MF (PyTorch, CUDA)", "BP (PyTorch, CUDA)"),
              ("MF (minimf, cupy) / MF (PyTorch, CUDA)", "MF (minimf)", "MF (PyTorch, CUDA)")]
TARGETS["mlp"].update({"MF (minimf, cupy) / BP (PyTorch, CUDA)": 0.65, "BP (minimf, cupy) / BP (PyTorch, CUDA)": 1.0,
                       "MF pipelined / BP (PyTorch, CUDA)": 0.65})
TARGETS["cnn"].update({"MF (minimf, cupy) / BP (PyTorch, CUDA)": 1.0, "MF pipelined / BP (PyTorch, CUDA)": 1.0})
TORCH_GPU = "cuda"   # the torch device of the GPU rows


# --only: a short name for every configuration
CONFIG_NAMES = {"mf": "MF (minimf)", "mf-pipelined": "MF pipelined", "mf-unit-split": "MF unit-split",
                "mf-batch-split": "MF batch-split", "bp": "BP (minimf)", "bp-batch-split": "BP batch-split",
                "pytorch": "BP (PyTorch, CPU)", "mf-products": "MF products", "bp-products": "BP products",
                "pytorch-cuda": "BP (PyTorch, CUDA)", "mf-pytorch-cuda": "MF (PyTorch, CUDA)",
                "mf-ray": "MF ray pipeline"}


class Network(NamedTuple):
    """What ``--arch`` builds, for every configuration alike.

    ``mf`` and ``bp`` are minimf's classes and ``kwargs`` their architecture arguments;
    ``torch_layers(torch)`` returns the PyTorch modules of the BP network, in order;
    ``torch_blocks(torch)`` its hidden layers as [(modules of layer i, n_i)], n_i the numbers its
    output has per example (what MF's projection M_i reads);
    ``products`` = (MF, BP): the matrix products (m, k, n) of one training step (``step_products``).
    """
    arch: str
    summary: str
    mf: type
    bp: type
    kwargs: dict
    torch_layers: Callable
    torch_blocks: Callable
    batch_size: int
    products: tuple

    @property
    def flops(self):
        """(MF, BP) FLOPs of one training step per example: a product (m, k) @ (k, n) costs 2*m*k*n."""
        return tuple(sum(2 * m * k * n for m, k, n in products) / self.batch_size for products in self.products)


class Config(NamedTuple):
    """One thing to time: ``make_run()`` builds a fresh network and returns ``run(batches)``, which
    trains on the given index arrays in order; ``batches`` are that framework's index arrays."""
    name: str
    make_run: Callable
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
    p.add_argument("--arch", choices=["mlp", "cnn"], default="mlp",
                   help="dense layers on (N, 784), or conv blocks (3x3 conv, ReLU, 2x2 average pool) "
                        "on (N, 1, 28, 28) (default: mlp)")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=None, metavar="H",
                   help=f"--arch mlp: hidden layer widths (default: {' '.join(map(str, DEFAULT_HIDDEN))})")
    p.add_argument("--channels", type=positive_int, nargs="+", default=None, metavar="F",
                   help=f"--arch cnn: channels of each conv block "
                        f"(default: {' '.join(map(str, DEFAULT_CHANNELS))}, the paper's)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="examples per step (default: 256)")
    p.add_argument("--fraction", type=fraction, default=1.0,
                   help="time only this fraction of an epoch's steps (default: 1.0)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="timings per configuration, interleaved; the median is reported (default: 3)")
    p.add_argument("--micro-batch", type=positive_int, default=None, metavar="M",
                   help="batch-split: parts of at most M examples, dealt out to the threads in turn "
                        "(default: one part per thread)")
    p.add_argument("--only", nargs="+", choices=CONFIG_NAMES, default=None, metavar="NAME",
                   help="time only these configurations, alone in this process (the allocator then "
                        f"remembers no one else's arrays): {', '.join(CONFIG_NAMES)}")
    p.add_argument("--threads", type=positive_int, default=None, metavar="T",
                   help="threads for NumPy's BLAS and PyTorch (needs threadpoolctl; default: leave as is)")
    p.add_argument("--ray", action="store_true",
                   help="also time MF's layers as Ray actors, one CPU and one BLAS thread each, on a local Ray "
                        "instance (minimf/parallel/ray_pipeline.py; starting the actors is not timed)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="also write the measured seconds and the ratios to FILE as JSON (atomically)")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:   # --hidden only with mlp, --channels only with cnn; the defaults filled in
        args.hidden, args.channels = architecture_widths(args.arch, args.hidden, args.channels, MNIST_IMAGE)
    except ConfigError as err:
        parser.error(str(err))
    try:
        xp = get_backend(args.backend)
    except BackendError as err:
        parser.error(str(err))
    return run_with_threads(parser, args.threads, lambda: run(args, xp))


def run(args, xp):
    """Prepare data and networks, time them, print the report. Returns the exit status 0."""
    threads, threads_source = (args.threads, "--threads") if args.threads else blas_threads()
    torch = import_torch()
    if torch is not None:
        torch.set_num_threads(threads)
    gpu_torch = torch is not None and args.backend == "cupy" and torch.cuda.is_available()
    net = (mlp_network(args.hidden, args.batch_size) if args.arch == "mlp"
           else cnn_network(args.channels, args.batch_size))
    x, y = standardised_mnist(flatten=args.arch == "mlp")
    order = make_rng(SEED).permutation(len(y))
    steps_per_epoch = math.ceil(len(y) / args.batch_size)
    steps = math.ceil(args.fraction * steps_per_epoch)
    configs = minimf_configs(xp, args.backend, net, x, y, order, args.batch_size, threads, args.micro_batch)
    if args.ray:
        configs.append(ray_config(xp, args.backend, net, x, y, configs[0].batches, configs[0].sync))
    configs += torch_configs(torch, gpu_torch, net, x, y, order, args.batch_size)
    configs += products_configs(xp, net, configs[0].batches, configs[0].sync)
    if args.only:
        configs = only(configs, args.only)

    print_header(args, net, threads, threads_source, torch, steps, steps_per_epoch, gpu_torch)
    seconds, faults = time_configs(configs, steps, args.repeats)
    print_table(seconds, faults, steps, args.fraction)
    mf_flops, bp_flops = net.flops
    print_flops(mf_flops * len(y), bp_flops * len(y), len(y), net.arch)
    print_lower_bound(seconds, net, steps, len(y), args.fraction)
    layers = len(args.hidden) if args.arch == "mlp" else len(args.channels)
    ratios = print_ratios(seconds, mf_flops / bp_flops, net.arch, pipeline_cores=layers if layers > threads else None)
    ratios.update(print_gpu_ratios(seconds, net.arch))
    if args.backend == "cupy" and args.arch == "mlp":
        print_prediction(seconds, [784, *args.hidden], args.batch_size, steps)
    if args.json:
        atomic_write_json(args.json, json_report(args, net, torch, gpu_torch, steps, seconds, ratios))
        print(f"\nwrote {args.json}")
    return 0


def only(configs, names):
    """The configurations named in ``names`` (keys of CONFIG_NAMES); SystemExit for one not built
    here (PyTorch not installed, unit-split on a CNN or on CuPy, ...)."""
    wanted = {CONFIG_NAMES[name] for name in names}
    missing = wanted - {config.name for config in configs}
    if missing:
        raise SystemExit(f"error: --only: {', '.join(sorted(missing))} cannot run with these settings")
    return [config for config in configs if config.name in wanted]


# --- the machine ---------------------------------------------------------------------------------

def import_torch():
    """The torch module, or None where it is not installed. Never imported at module level:
    minimf does not depend on PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def torch_gpu_name(torch):
    """The name of the GPU PyTorch's GPU rows run on (the device itself where it is no CUDA GPU)."""
    return torch.cuda.get_device_name() if TORCH_GPU == "cuda" else TORCH_GPU


# --- the two architectures -----------------------------------------------------------------------

def mlp_network(hidden, batch_size):
    """Dense ReLU layers ``784 -> hidden...``; BP adds a dense output layer to 10 classes."""
    sizes = [MNIST_IMAGE[0] * MNIST_IMAGE[1] * MNIST_IMAGE[2]] + list(hidden)
    layers = [dense_products(d, h, batch_size) for d, h in zip(sizes[:-1], sizes[1:])]
    products = step_products(layers, sizes[1:], batch_size, NUM_CLASSES)
    summary = f"MLP {'-'.join(map(str, sizes))} ReLU -> {NUM_CLASSES} classes"
    return Network("mlp", summary, MonoForwardNet, BackpropNet, {"sizes": sizes},
                   partial(torch_mlp_layers, sizes=sizes), partial(torch_mlp_blocks, sizes=sizes),
                   batch_size, products)


def cnn_network(channels, batch_size):
    """Conv blocks on 1x28x28 (3x3 conv, padding 1 -> ReLU -> 2x2 average pool); BP adds a dense
    output layer on the flattened last block."""
    shapes = block_shapes(MNIST_IMAGE, channels)     # the input, then every block's output (F, H', W')
    layers = [conv_products(C, F, H, W, batch_size) for (C, H, W), (F, _, _) in zip(shapes[:-1], shapes[1:])]
    readouts = [F * H * W for F, H, W in shapes[1:]]
    products = step_products(layers, readouts, batch_size, NUM_CLASSES)
    maps = "-".join(str(h) for _, h, _ in shapes)
    summary = (f"CNN 1x28x28 -> conv blocks {'-'.join(map(str, channels))} (3x3 conv pad 1, ReLU, "
               f"2x2 avg pool; maps {maps}) -> {NUM_CLASSES} classes")
    return Network("cnn", summary, MonoForwardCNN, BackpropCNN,
                   {"input_shape": MNIST_IMAGE, "channels": list(channels)},
                   partial(torch_cnn_layers, shapes=shapes), partial(torch_cnn_blocks, shapes=shapes),
                   batch_size, products)


def torch_mlp_blocks(torch, sizes):
    """[([Linear, ReLU], width)] for every hidden layer."""
    return [([torch.nn.Linear(d_in, width), torch.nn.ReLU()], width) for d_in, width in zip(sizes[:-1], sizes[1:])]


def torch_mlp_layers(torch, sizes):
    """Linear + ReLU per hidden layer, then a Linear output layer (no ReLU)."""
    layers = [module for modules, _ in torch_mlp_blocks(torch, sizes) for module in modules]
    return layers + [torch.nn.Linear(sizes[-1], NUM_CLASSES)]


def torch_cnn_blocks(torch, shapes):
    """[([Conv2d(C, F, 3, padding=1), ReLU, AvgPool2d(2)], F*H'*W')] for every block (floor, as minimf)."""
    return [([torch.nn.Conv2d(c_in, F, KERNEL, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(2)], F * H * W)
            for (c_in, _, _), (F, H, W) in zip(shapes[:-1], shapes[1:])]


def torch_cnn_layers(torch, shapes):
    """The conv blocks, then Flatten and a Linear output layer from F*H*W of the last block."""
    layers = [module for modules, _ in torch_cnn_blocks(torch, shapes) for module in modules]
    F, H, W = shapes[-1]
    return layers + [torch.nn.Flatten(), torch.nn.Linear(F * H * W, NUM_CLASSES)]


# --- the data and the configurations ---------------------------------------------------------------

def standardised_mnist(flatten=True):
    """The 60000 MNIST training examples as host arrays: x float32 with mean 0 and std 1
    (MNIST_MEAN, MNIST_STD), (N, 784) or, with ``flatten=False``, (N, 1, 28, 28); y (N,) int64."""
    train = load("mnist", "train", flatten=flatten)
    x = (train.x - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)
    return x.astype(np.float32, copy=False), train.y


def epoch_batches(order, batch_size):
    """The index arrays of one epoch's batches, in the order ``order`` (the last may be short)."""
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def minimf_configs(xp, backend, net, x, y, order, batch_size, threads, micro_batch):
    """MF and BP in minimf, and the parallel trainers: MF pipelined; on NumPy, MF unit-split (MLP
    only) and MF and BP batch-split, with ``threads`` threads. The data moves to the backend here,
    once, before any timing. On CuPy the steps run as ``python -m minimf.train`` runs them: the
    values checked once, here, then ``validate=False`` (no host sync per step for the checks)."""
    x, y, order = xp.asarray(x), xp.asarray(y), xp.asarray(order)
    sync = device_sync(xp)
    validate = backend != "cupy"
    if not validate and not (bool(xp.isfinite(x).all()) and 0 <= int(y.min()) and int(y.max()) < NUM_CLASSES):
        raise ValueError("the MNIST arrays hold NaN or labels out of range")

    def model(kind):
        return kind(**net.kwargs, num_classes=NUM_CLASSES, backend=backend, seed=SEED, lr=LR)

    def stepwise(kind):
        def make_run():
            m = model(kind)
            return lambda batches: [m.train_step(x[idx], y[idx], validate=validate) for idx in batches]
        return make_run

    def parallel(train, kind=net.mf):
        """A trainer with threads of its own, each calling a one-threaded BLAS."""
        def make_run():
            m = model(kind)

            def run(batches):
                with one_blas_thread():
                    return train(m, ((x[idx], y[idx]) for idx in batches))
            return run
        return make_run

    batches = epoch_batches(order, batch_size)
    configs = [Config("MF (minimf)", stepwise(net.mf), batches, sync),
               Config("MF pipelined", parallel(partial(train_pipelined, validate=validate)), batches, sync)]
    if net.arch == "mlp" and backend == "numpy":
        configs.append(Config("MF unit-split", parallel(partial(train_unit_split, threads=threads)), batches, sync))
    split_batches = partial(train_batch_split, threads=threads, micro_batch=micro_batch)
    if backend == "numpy":
        configs.append(Config("MF batch-split", parallel(split_batches), batches, sync))
    configs.append(Config("BP (minimf)", stepwise(net.bp), batches, sync))
    if backend == "numpy":
        configs.append(Config("BP batch-split", parallel(split_batches, net.bp), batches, sync))
    return configs


def ray_config(xp, backend, net, x, y, batches, sync):
    """MF with every layer a Ray actor (one CPU, one BLAS thread each). Each repeat gets a fresh
    network, so fresh actors; they start in ``make_run``, before the timing, and the previous
    repeat's are stopped then (the last at exit)."""
    from minimf.parallel.ray_pipeline import RayPipeline, RayPipelineError
    x, y = xp.asarray(x), xp.asarray(y)
    running = []

    def make_run():
        while running:
            running.pop().__exit__(None, None, None)
        pipeline = RayPipeline(net.mf(**net.kwargs, num_classes=NUM_CLASSES, backend=backend, seed=SEED, lr=LR))
        try:
            running.append(pipeline.__enter__())
        except RayPipelineError as err:   # e.g. more layers than this machine's CPUs
            raise SystemExit(f"error: --ray: {err}") from None
        atexit.register(lambda: running and running.pop().__exit__(None, None, None))
        return lambda batches: pipeline.train((x[idx], y[idx]) for idx in batches)
    return Config("MF ray pipeline", make_run, batches, sync)


def products_configs(xp, net, batches, sync):
    """The lower bound: every step runs only the matrix products of an MF (BP) step, on random
    float32 arrays of the same shapes, made once. Its time is the epoch's FLOPs divided by this
    machine's GFLOP/s at exactly these shapes (the last, shorter batch is timed at full size)."""
    def products_only(products):
        def make_run():
            rng = make_rng(SEED)
            pairs = [(xp.asarray(rng.standard_normal((m, k)), dtype="float32"),
                      xp.asarray(rng.standard_normal((k, n)), dtype="float32")) for m, k, n in products]

            def run(batches):
                for _ in batches:
                    for a, b in pairs:
                        a @ b
            return run
        return make_run

    mf, bp = net.products
    return [Config("MF products", products_only(mf), batches, sync),
            Config("BP products", products_only(bp), batches, sync)]


def torch_configs(torch, on_gpu, net, x, y, order, batch_size):
    """PyTorch's rows: none without torch; BP and MF on the GPU where ``on_gpu``; else BP on the CPU."""
    if torch is None:
        return []
    if on_gpu:
        return torch_gpu_configs(torch, net, x, y, order, batch_size)
    return [torch_config(torch, net, x, y, order, batch_size)]


def torch_config(torch, net, x, y, order, batch_size):
    """The BP network in PyTorch on the CPU. ``torch.from_numpy`` shares the host arrays, nothing
    is copied; each step returns ``loss.item()``, a Python float (this row as it always was)."""
    x, y, order = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(order)
    return Config("BP (PyTorch, CPU)", torch_bp(torch, net, x, y, torch.device("cpu"), host_loss=True),
                  epoch_batches(order, batch_size), lambda: None)


def torch_gpu_configs(torch, net, x, y, order, batch_size):
    """BP and MF in PyTorch on the GPU (TF32 off, as CuPy's float32). The data are copied there
    once and each batch is gathered there with a device index array, as minimf does on CuPy;
    ``torch.cuda.synchronize()`` closes each timing."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device(TORCH_GPU)
    x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    batches = epoch_batches(torch.from_numpy(order).to(device), batch_size)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return [Config("BP (PyTorch, CUDA)", torch_bp(torch, net, x, y, device, host_loss=False), batches, sync),
            Config("MF (PyTorch, CUDA)", torch_mf(torch, net, x, y, device), batches, sync)]


def torch_bp(torch, net, x, y, device, host_loss):
    """make_run of BP in PyTorch on ``device``: ``net.torch_layers``, CrossEntropyLoss, Adam. A step
    returns ``loss.item()`` (``host_loss``: a host sync) or the loss left on the device."""
    def make_run():
        torch.manual_seed(SEED)
        model = torch.nn.Sequential(*net.torch_layers(torch)).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        loss_fn = torch.nn.CrossEntropyLoss()

        def step(idx):
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
            return loss.item() if host_loss else loss.detach()
        return lambda batches: [step(idx) for idx in batches]
    return make_run


def torch_mf(torch, net, x, y, device):
    """make_run of MF in PyTorch on ``device`` (``torch_mf_layers``, ``torch_mf_step``)."""
    def make_run():
        torch.manual_seed(SEED)
        layers = torch_mf_layers(torch, net, device)
        return lambda batches: [torch_mf_step(torch, layers, x[idx], y[idx]) for idx in batches]
    return make_run


def torch_mf_layers(torch, net, device):
    """[(modules, M_i, Adam)]: every hidden layer of ``net.torch_blocks`` with its own projection
    M_i (C, n_i), uniform in +-1/sqrt(n_i) as minimf draws it, and its own Adam over both."""
    layers = []
    for modules, width in net.torch_blocks(torch):
        body = torch.nn.Sequential(*modules).to(device)
        bound = width ** -0.5
        M = torch.nn.Parameter(torch.empty(NUM_CLASSES, width, device=device).uniform_(-bound, bound))
        layers.append((body, M, torch.optim.Adam([*body.parameters(), M], lr=LR)))
    return layers


def torch_mf_step(torch, layers, x, y):
    """One MF step: each layer's own cross-entropy and Adam step. Each layer's input is detached,
    so no gradient crosses layers, and layer i+1 gets a_i from before layer i's update, as in
    minimf. Returns the losses, left on the device."""
    a, losses = x, []
    for body, M, optimizer in layers:
        a = body(a.detach())                                             # the gradient stops here
        loss = torch.nn.functional.cross_entropy(a.flatten(1) @ M.T, y)  # (5) G_i = a_i M_i^T, (6)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()                                                 # (7), (8)
        losses.append(loss.detach())
    return losses


# --- timing ----------------------------------------------------------------------------------------

def time_once(config, steps):
    """(seconds, minor page faults) for the first ``steps`` batches of an epoch, on a fresh network
    after a warm-up. A minor fault is the first touch of a fresh page of memory: an array the
    allocator got new from the OS instead of reusing freed memory (None where ``resource`` is missing)."""
    run = config.make_run()
    run(config.batches[:WARMUP_STEPS])
    config.sync()
    faults = minor_faults()
    seconds = seconds_of(lambda: run(config.batches[:steps]), config.sync)
    return seconds, None if faults is None else minor_faults() - faults


def minor_faults():
    """The process's minor page faults so far (all threads), or None without ``resource``."""
    return None if resource is None else resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_configs(configs, steps, repeats):
    """({name: [seconds, one per repeat]}, {name: [minor page faults, one per repeat]}): ``time_once``
    of every configuration, ``interleaved`` (minimf/experiments/measure.py)."""
    def say(repeat, name):
        print(f"  repeat {repeat}/{repeats}: {name} ...", file=sys.stderr, flush=True)
    times = interleaved({config.name: partial(time_once, config, steps) for config in configs}, repeats, say)
    return ({name: [s for s, _ in runs] for name, runs in times.items()},
            {name: [f for _, f in runs] for name, runs in times.items()})


# --- arithmetic ------------------------------------------------------------------------------------

def dense_products(d, h, n):
    """(forward, dW, dx) of a dense layer D -> H on a batch of n, each a product (m, k) @ (k, n)
    written (m, k, n), as minimf/nn/layers.py multiplies: z = x W (N, D) @ (D, H),
    dW = x^T dz (D, N) @ (N, H), dx = dz W^T (N, H) @ (H, D). Each costs P = 2*N*D*H FLOPs."""
    return (n, d, h), (d, n, h), (n, h, d)


def conv_products(c, f, h, w, n):
    """(forward, dW, dx) of a 3x3 conv block C -> F on H x W maps (padding 1 keeps H x W) as
    im2col's products (minimf/nn/im2col.py), K = C*3*3, M = N*H*W: out = w2 @ cols (F, K) @ (K, M),
    dw = cols @ d^T (K, M) @ (M, F), dcols = w2^T @ d (K, F) @ (F, M); P = 2*F*K*M each."""
    k, m = c * KERNEL * KERNEL, n * h * w
    return (f, k, m), (k, m, f), (k, f, m)


def step_products(layers, readouts, n, num_classes):
    """The matrix products of one training step: (MF list, BP list) of (m, k, n) shapes.

    ``layers[i]`` = (forward, dW, dx) of layer i (``dense_products``, ``conv_products``);
    ``readouts[i]`` = n_i, what MF's projection M_i (C, n_i) reads: H for a dense layer,
    F*H'*W' (after pooling) for a conv block. With C classes:
        MF: forward and dW, plus goodness a M^T (N, n_i) @ (n_i, C), dM = dG^T a (C, N) @ (N, n_i),
            da = dG M (N, C) @ (C, n_i); no input gradient, the error stops at the layer:
            2 P_i + 3*(2 N n_i C) FLOPs.
        BP: forward, dW, and dx for every layer but the first = (2 or 3) P_i;
            plus the output layer n_L -> C: forward, dW, dx = 3*(2 N n_L C).
    ReLU, pooling, im2col's copies, softmax and Adam are left out: they touch every number a few
    times but multiply no matrices.
    """
    c = num_classes
    mf, bp = [], []
    for i, ((forward, dW, dx), width) in enumerate(zip(layers, readouts)):
        mf += [forward, dW, (n, width, c), (c, n, width), (n, c, width)]
        bp += [forward, dW] + ([dx] if i > 0 else [])
    width = readouts[-1]
    bp += [(n, width, c), (width, n, c), (n, c, width)]
    return mf, bp


# --- output ----------------------------------------------------------------------------------------

def print_header(args, net, threads, threads_source, torch, steps, steps_per_epoch, gpu_torch=False):
    machine = platform.processor() or platform.machine()
    print(f"One MNIST training epoch ({net.arch.upper()}): Mono-Forward vs backprop")
    print(f"  machine   {machine}, {os.cpu_count()} CPUs")
    print(f"  numpy     {np.__version__}, BLAS threads {threads} (from {threads_source})")
    print(f"  BLAS      {blas_kernel()}")
    if torch is None:
        print("  torch     not installed: no PyTorch baseline, minimf ratios only")
    elif gpu_torch:
        print(f"  torch     {torch.__version__}, CUDA {torch.version.cuda} on {torch_gpu_name(torch)}, "
              "TF32 off: BP and MF rows on the GPU")
    else:
        print(f"  torch     {torch.__version__}, CPU ({torch.backends.cpu.get_cpu_capability()} kernels), "
              f"torch.set_num_threads({threads})")
    on_cpu = torch is not None and args.backend == "cupy" and not gpu_torch
    gpu_note = "   (PyTorch still runs on the CPU: torch.cuda.is_available() is False)" if on_cpu else ""
    print(f"  backend   {args.backend}{gpu_note}")
    print(f"  network   {net.summary}, float32, Adam lr {LR:g}")
    print(f"  batch     {args.batch_size}, {steps_per_epoch} steps per epoch")
    part = "a full epoch" if args.fraction == 1 else f"fraction {args.fraction:g} of an epoch"
    print(f"  timed     {part}: {steps} steps after {WARMUP_STEPS} warm-up steps, "
          f"{args.repeats} interleaved repeat(s), median shown")
    if args.backend == "numpy":
        unit = f"MF unit-split {threads} threads, " if args.arch == "mlp" else ""
        parts = f"parts of {args.micro_batch}" if args.micro_batch else "one part per thread"
        split = f"{unit}MF and BP batch-split {threads} threads ({parts})"
    else:
        split = "no unit-split or batch-split on CuPy"
    print(f"  parallel  MF pipelined one thread per layer, {split}; each thread with 1 BLAS thread"
          + ("" if threadpoolctl is not None else " only if started with OPENBLAS_NUM_THREADS=1 (no threadpoolctl)"))
    print(kernel_warning())


def print_table(seconds, faults, steps, fraction):
    """configuration | median seconds | fastest | spread (max - min over the median) | steps |
    minor page faults per step (median over the repeats)."""
    heading = "median s / " + ("epoch" if fraction == 1 else f"{fraction:g} epoch")
    w = len(heading)
    print(f"  {'configuration':<24} {heading} {'fastest':>8} {'spread':>8} {'steps':>6} {'faults/step':>12}")
    for name, times in seconds.items():
        median = statistics.median(times)
        spread = f"{100 * (max(times) - min(times)) / median:.0f}%" if len(times) > 1 else "-"
        faulted = "-" if None in faults[name] else f"{statistics.median(faults[name]) / steps:.0f}"
        print(f"  {name:<24} {median:>{w}.3f} {min(times):>8.3f} {spread:>8} {steps:>6} {faulted:>12}")
    print()


def print_flops(mf, bp, examples, arch):
    counted = "matrix products only" if arch == "mlp" else "convolutions and matrix products only"
    print(f"Arithmetic ({counted}), one full epoch of {examples} examples:")
    print(f"  MF {mf / 1e9:.1f} GFLOP, BP {bp / 1e9:.1f} GFLOP, MF/BP {mf / bp:.2f}")
    print()


def print_lower_bound(seconds, net, steps, examples, fraction):
    """GFLOP/s of the products alone at the network's shapes, and the epoch they allow."""
    print("Lower bound: the matrix products alone, at the network's shapes, measured in this run:")
    part = "epoch" if fraction == 1 else f"{fraction:g} epoch"
    for rule, flops in zip(("MF", "BP"), net.flops):
        if f"{rule} products" not in seconds or f"{rule} (minimf)" not in seconds:
            continue                                 # --only left one of them out
        products = statistics.median(seconds[f"{rule} products"])
        rate = flops * net.batch_size * steps / products            # FLOP/s at these shapes
        print(f"  {rule}: {rate / 1e9:.1f} GFLOP/s -> {flops * examples / rate:.3f} s per epoch "
              f"({products:.3f} s per {part}); {rule} (minimf) takes "
              f"{statistics.median(seconds[f'{rule} (minimf)']) / products:.2f}x that")
    print()


def print_prediction(seconds, sizes, batch_size, steps):
    """The launch-and-FLOP model's step (benchmarks/launch_model.py, with its H100 constants) beside
    the step this run measured, for minimf's MF and BP on CuPy."""
    from launch_model import predicted_steps                   # benchmarks/launch_model.py, beside this script
    print()
    print("The launch model's step (benchmarks/launch_model.py, H100 constants) against this run's:")
    print(f"  {'':<12} {'launches':>8} {'predicted ms':>12} {'measured ms':>11}  predicted bound")
    for rule, r in predicted_steps(sizes, batch_size).items():
        row = f"{rule} (minimf)"
        if row in seconds:
            measured = 1e3 * statistics.median(seconds[row]) / steps
            print(f"  {row:<12} {r['launches']:>8} {r['step_ms']:>12.3f} {measured:>11.3f}  {r['bound']}")


def ratio(seconds, first, second, target=None):
    """{"median", "fastest", "target"}: the time of ``first`` over ``second``'s, of the medians and of
    the fastest repeats; None where either was not run here (--only, no PyTorch, a CNN, CuPy)."""
    if first not in seconds or second not in seconds:
        return None
    return {"median": statistics.median(seconds[first]) / statistics.median(seconds[second]),
            "fastest": min(seconds[first]) / min(seconds[second]), "target": target}


def print_ratios(seconds, flop_ratio, arch, pipeline_cores=None):
    """The headline: time of one configuration over another's (below 1: the first is faster).
    ``pipeline_cores``: the pipeline's thread count where it exceeds the other rows' threads.
    Returns {label: ``ratio``} of the lines printed."""
    targets = TARGETS[arch]
    ratios = {}

    def line(label, first, second, note=""):
        result = ratio(seconds, first, second, targets.get(label))
        if result is None:
            return
        ratios[label] = result
        if pipeline_cores and label.startswith("MF-pipelined/"):
            note = f"   (not like for like: the pipeline ran {pipeline_cores} threads)"
        elif label in targets:
            note = f"   (target {targets[label]:g} or below)"
        print(f"  {label:<26} {result['median']:6.2f} {result['fastest']:8.2f}{note}")

    print("Ratios of times (the result; below 1 means the first is faster), of the medians and of the")
    print("fastest repeats (on a busy machine the fastest repeat is the least disturbed one):")
    print(f"  {'':<26} {'median':>6} {'fastest':>8}")
    line("MF/BP (minimf)", "MF (minimf)", "BP (minimf)", f"   (FLOP ratio {flop_ratio:.2f})")
    line("MF/MF-products", "MF (minimf)", "MF products")
    line("BP/BP-products", "BP (minimf)", "BP products")
    line("MF-pipelined/MF", "MF pipelined", "MF (minimf)", "   (below 1: the pipeline is faster; same numbers)")
    line("MF-pipelined/MF-products", "MF pipelined", "MF products")
    line("MF-ray/MF", "MF ray pipeline", "MF (minimf)", "   (below 1: the actors are faster; same numbers)")
    line("MF-ray/MF-pipelined", "MF ray pipeline", "MF pipelined", "   (processes and hand-offs against threads)")
    for trainer in ("unit-split", "batch-split"):
        line(f"MF-{trainer}/MF", f"MF {trainer}", "MF (minimf)", "   (below 1: faster)")
        line(f"MF-{trainer}/MF-products", f"MF {trainer}", "MF products")
    line("BP-batch-split/BP", "BP batch-split", "BP (minimf)", "   (below 1: faster)")
    line("MF/PyTorch-BP", "MF (minimf)", "BP (PyTorch, CPU)")
    line("MF-pipelined/PyTorch-BP", "MF pipelined", "BP (PyTorch, CPU)")
    for trainer in ("unit-split", "batch-split"):
        line(f"MF-{trainer}/PyTorch-BP", f"MF {trainer}", "BP (PyTorch, CPU)")
    line("minimf-BP/PyTorch-BP", "BP (minimf)", "BP (PyTorch, CPU)")
    line("BP-batch-split/PyTorch-BP", "BP batch-split", "BP (PyTorch, CPU)")
    return ratios


def print_gpu_ratios(seconds, arch):
    """minimf on CuPy against PyTorch on the same GPU (GPU_RATIOS), where both rows ran; returns
    {label: ``ratio``} of the lines printed."""
    ratios = {label: ratio(seconds, first, second, TARGETS[arch].get(label)) for label, first, second in GPU_RATIOS}
    ratios = {label: result for label, result in ratios.items() if result is not None}
    if not ratios:
        return {}
    width = max(map(len, ratios))
    print()
    print("On the GPU, against PyTorch on the same GPU (below 1: the first is faster):")
    print(f"  {'':<{width}} {'median':>6} {'fastest':>8}")
    for label, result in ratios.items():
        note = f"   (target {result['target']:g} or below)" if result["target"] else ""
        print(f"  {label:<{width}} {result['median']:6.2f} {result['fastest']:8.2f}{note}")
    return ratios


def json_report(args, net, torch, gpu_torch, steps, seconds, ratios):
    """What --json writes: the settings, every configuration's seconds (each repeat, the median and
    the fastest, for ``steps`` steps) and every ratio printed, with its target (or null)."""
    device = None if torch is None else (torch_gpu_name(torch) if gpu_torch else "cpu")
    return {"arch": net.arch, "network": net.summary, "backend": args.backend, "batch_size": args.batch_size,
            "fraction": args.fraction, "timed_steps": steps, "repeats": args.repeats,
            "torch": None if torch is None else torch.__version__, "torch_device": device,
            "seconds": {name: {"median": statistics.median(times), "fastest": min(times), "repeats": times}
                        for name, times in seconds.items()},
            "ratios": ratios}


if __name__ == "__main__":
    sys.exit(main())
