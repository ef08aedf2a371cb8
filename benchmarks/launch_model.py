"""A launch-and-FLOP model of one training step on a GPU: launch-bound or compute-bound?

    python benchmarks/launch_model.py                       # MF and BP 784-1000-1000, batch 256, H100 constants
    python benchmarks/launch_model.py --hidden 1000 x4 --batch-size 128
    python benchmarks/launch_model.py --launch-us 8 --tflops 50 --tbps 2

A GPU step of a small network costs the larger of two times:

    host time    = launches x (host time per launch)            CuPy's Python and the driver, one launch at a time
    device time  = FLOPs / (FLOP/s) + bytes / (bytes/s)          the kernels themselves

When the host time is the larger, the GPU waits between kernels and the step is *launch-bound*:
fewer launches (fused kernels) speed it up, faster arithmetic does not. The launches are counted, not
guessed: the step runs on the strict CuPy stand-in (minimf/testing/strict_cupy.py), which counts for
every operation the kernels CuPy launches for it (read from CuPy's source). The FLOPs are the matrix
products' 2 x m x k x n; the bytes are the optimiser's traffic (Adam reads g, m, v, p and writes m, v,
p: 7 numbers per parameter) and each product's operands and result, once.

The default constants describe an NVIDIA H100 SXM from its data sheet: 67 TFLOP/s in float32 without
tensor cores (CuPy's float32 products do not use TF32 unless CUPY_TF32=1) and 3.35 TB/s of HBM3; and
5 us of host time per launch, the low end of the 5-8 us the project's GPU issue estimated for CuPy's
Python-side launch path (measured, with benchmarks/gpu_check.sh, the day a GPU is lent). They are
options, so a measured figure replaces a stated one.

CUDA graphs would replay many kernels with one launch, but CuPy 14 refuses every cuBLAS call on a
stream that is being captured (``cublas.setStream`` in cupy_backends/cuda/libs/cublas.pyx raises
NotImplementedError), so no matrix product can be in a graph. The column "graphs" counts what
graphs could still do: each product stays one launch, and each stretch of kernels between two
products becomes one graph launch (``launches_with_graphs``).
"""
import argparse
import math
import os
import sys

import numpy as np

from minimf import BackpropNet, MonoForwardNet
from minimf.argtypes import positive_float, positive_int
from minimf.backend import get_backend
from minimf.testing import strict_cupy

H100 = {"launch_us": 5.0, "tflops": 67.0, "tbps": 3.35}
TRAIN_EXAMPLES, CLASSES, BYTES = 60_000, 10, 4   # MNIST's training split, float32


def build_parser():
    p = argparse.ArgumentParser(prog="python benchmarks/launch_model.py", description=__doc__.split("\n")[0])
    p.add_argument("--hidden", nargs="+", default=["1000", "1000"], metavar="H",
                   help="hidden widths, or W xL for L layers of W (default: 1000 1000)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--launch-us", type=positive_float, default=H100["launch_us"],
                   help=f"host time per kernel launch in microseconds (default: {H100['launch_us']})")
    p.add_argument("--tflops", type=positive_float, default=H100["tflops"],
                   help=f"float32 arithmetic in TFLOP/s (default: the H100's {H100['tflops']})")
    p.add_argument("--tbps", type=positive_float, default=H100["tbps"],
                   help=f"memory bandwidth in TB/s (default: the H100's {H100['tbps']})")
    return p


def widths(words):
    """["1000", "x4"] -> [1000, 1000, 1000, 1000]; ["500", "300"] -> [500, 300]."""
    if len(words) == 2 and words[1].startswith("x"):
        return [int(words[0])] * int(words[1][1:])
    return [int(w) for w in words]


def launch_sequence(net_class, sizes, batch_size):
    """[(operation, launches)] of one step (after the first, which makes the optimiser's state), in the
    order the stand-in counts them (MINIMF_STRICT_CUPY=1: the real CuPy counts nothing)."""
    xp = get_backend("cupy")
    if xp is not strict_cupy:          # the real CuPy counts nothing
        raise RuntimeError("counting launches needs the strict stand-in: run with MINIMF_STRICT_CUPY=1")
    rng = np.random.default_rng(0)
    x = xp.asarray(rng.standard_normal((batch_size, sizes[0])).astype("float32"))
    y = xp.asarray(rng.integers(0, CLASSES, batch_size))
    net = net_class(sizes=sizes, num_classes=CLASSES, backend="cupy", seed=0)
    net.train_step(x, y, validate=False)
    with strict_cupy.launch_record() as record:
        net.train_step(x, y, validate=False)
    return record


def launches_with_graphs(sequence):
    """The launches of ``sequence`` if every stretch of operations between two matrix products were
    captured as one CUDA graph: the products stay (CuPy 14 cannot capture a cuBLAS call), each
    stretch becomes one launch."""
    launches, in_stretch = 0, False
    for operation, count in sequence:
        if operation == "matmul":
            launches += count + in_stretch
            in_stretch = False
        else:
            in_stretch = True
    return launches + in_stretch


def products(rule, sizes, n):
    """Every matrix product of one step as (m, k, n_out): MF's per layer x W, a M^T, dG^T a, dG M, x^T dz;
    BP's x W per layer, then per layer dz^T-side dW and (but the first) dx."""
    shapes = []
    pairs = list(zip(sizes[:-1], sizes[1:]))
    if rule == "mf":
        for d, h in pairs:
            shapes += [(n, d, h), (n, h, CLASSES), (CLASSES, n, h), (n, CLASSES, h), (d, n, h)]
        return shapes
    layers = pairs + [(sizes[-1], CLASSES)]
    shapes += [(n, d, h) for d, h in layers]                            # forward
    for i, (d, h) in enumerate(layers):
        shapes.append((d, n, h))                                        # dW = x^T dz
        if i > 0:
            shapes.append((n, h, d))                                    # dx = dz W^T
    return shapes


def parameters(rule, sizes):
    dense = sum(d * h + h for d, h in zip(sizes[:-1], sizes[1:]))
    heads = sum(CLASSES * h for h in sizes[1:]) if rule == "mf" else sizes[-1] * CLASSES + CLASSES
    return dense + heads


def predict(rule, sizes, batch_size, launches, launch_us, tflops, tbps):
    """The model's step: host and device seconds, and which bounds it."""
    shapes = products(rule, sizes, batch_size)
    flops = sum(2 * m * k * n for m, k, n in shapes)
    operand_bytes = sum(m * k + k * n + m * n for m, k, n in shapes) * BYTES
    optimiser_bytes = 7 * parameters(rule, sizes) * BYTES
    host = launches * launch_us * 1e-6
    device = flops / (tflops * 1e12) + (operand_bytes + optimiser_bytes) / (tbps * 1e12)
    return {"launches": launches, "gflop": flops / 1e9, "mbytes": (operand_bytes + optimiser_bytes) / 1e6,
            "host_ms": 1e3 * host, "device_ms": 1e3 * device, "step_ms": 1e3 * max(host, device),
            "bound": "launch-bound" if host > device else "compute-bound"}


def predicted_steps(sizes, batch_size, constants=H100):
    """{"MF": step, "BP": step}, each ``predict``'s, with the launches counted on the stand-in, which
    ``get_backend("cupy")`` gives while MINIMF_STRICT_CUPY=1: set here for the count only, so that a
    process training on a real GPU (benchmarks/epoch_time.py) can ask too."""
    before = os.environ.get("MINIMF_STRICT_CUPY")
    os.environ["MINIMF_STRICT_CUPY"] = "1"
    try:
        sequences = {rule: launch_sequence(net_class, sizes, batch_size)
                     for rule, net_class in (("MF", MonoForwardNet), ("BP", BackpropNet))}
    finally:
        if before is None:
            del os.environ["MINIMF_STRICT_CUPY"]
        else:
            os.environ["MINIMF_STRICT_CUPY"] = before
    return {rule: dict(predict(rule.lower(), sizes, batch_size, sum(count for _, count in sequence),
                               constants["launch_us"], constants["tflops"], constants["tbps"]),
                       graphs=launches_with_graphs(sequence))
            for rule, sequence in sequences.items()}


def main(argv=None):
    args = build_parser().parse_args(argv)
    sizes = [784] + widths(args.hidden)
    steps = math.ceil(TRAIN_EXAMPLES / args.batch_size)
    print(f"784-{'-'.join(map(str, sizes[1:]))}, batch {args.batch_size}, float32, Adam; {args.launch_us:g} us "
          f"per launch, {args.tflops:g} TFLOP/s, {args.tbps:g} TB/s; an MNIST epoch = {steps} steps")
    print(f"{'rule':<5}{'launches':>9}{'graphs':>7}{'GFLOP':>8}{'MB':>8}{'host ms':>9}{'device ms':>11}"
          f"{'epoch s':>9}  bound")
    constants = {"launch_us": args.launch_us, "tflops": args.tflops, "tbps": args.tbps}
    for rule, r in predicted_steps(sizes, args.batch_size, constants).items():
        print(f"{rule:<5}{r['launches']:>9}{r['graphs']:>7}{r['gflop']:>8.2f}{r['mbytes']:>8.1f}"
              f"{r['host_ms']:>9.3f}{r['device_ms']:>11.3f}{steps * r['step_ms'] / 1e3:>9.2f}  {r['bound']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
