"""Memory of ONE training step on an MLP-Mixer: Mono-Forward (MF) against backprop (BP), as the
allocator's peak, beside MF v2's claim (arXiv 2501.09238v2: on MLP-Mixers MF needs "only 31% of
backpropagation's memory"); and the 2 x 1000 MLP, where the advantage vanishes.

    python benchmarks/mixer_memory.py                                  # depths 2 4 8 16, PathMNIST's shape
    python benchmarks/mixer_memory.py --depths 2 4 --width 64 --batch-size 32   # a quick look
    python benchmarks/mixer_memory.py --backend cupy                   # GPU memory, CuPy's pool

What is measured, for each network built fresh (minimf/experiments/measure.py's ``mixer_step_memory``
and ``mlp_step_memory``, shared with ``python -m minimf.experiments mixer``, and its meters: tracemalloc
on NumPy, a hook on CuPy's memory pool on CuPy):

* resident: what stays allocated between steps, i.e. the parameters and the optimiser's state
  (Adam's m and v; on NumPy also one scratch array per parameter, minimf/nn/optim.py), counted after
  one warm-up step;
* step peak: the peak allocated DURING one ``train_step`` on top of that (activations, caches,
  gradients, temporaries), as benchmarks/memory.py measures it;
* total = resident + step peak: the allocator's peak of a training step, the quantity a GPU memory
  figure (``torch.cuda.max_memory_allocated``) reports, and the one MF v2's 31% and Spyra & Dzwinel's
  51.04 against 50.90 MiB for the 2 x 1000 MLP compare.

The batch (random standard-normal images of the data set's shape and random labels; a step allocates
the same whatever the values) is made before measuring, and ``train_step(..., validate=False)`` runs
the step alone, as the command line does. tracemalloc does not see the BLAS library's own work
buffers.

Why the ratio is what it is: what each rule keeps alive
-------------------------------------------------------
Both rules keep the same parameters (MF adds a K x D projection per block, BP one K x D head) and the
same optimiser state, so the resident part is about the same for both; the difference is all in the
step. One block's cache (minimf/nn/mixer.py's ``block_cache_numbers``) is, in numbers,

    4 N S D  +  3 N D H_t  +  3 N S H_c  +  2 N S     (two normalised copies and each MLP's input;
                                                       GELU's z and s and the hidden h of each MLP;
                                                       two 1/sqrt(var + eps) per patch)

(61 MiB in float32 for N 128, S 49, D 128, H_t 64, H_c 512). BP's backward pass needs the cache of
EVERY block: the forward pass keeps all L of them until the backward pass comes back down, and
minimf's BP also computes every block's gradient before stepping (a parameter-sized set). MF trains
block by block inside the forward pass (minimf/rules/mixer.py): block i computes its cache, its local
loss and gradients, updates itself, and hands only its output X_i (N S D) on; its cache can go before
block i+1 starts. So MF's step holds ONE block's cache (and at most two blocks' gradients), whatever
the depth; both rules add the temporaries of one block's backward pass (the gradients of its
activations, such as the (N, S, H_c) ones inside the channel MLP), freed block by block:

    step peak:  BP ~ L x cache + all gradients + temporaries
                MF ~ 1 x cache + two blocks' gradients + temporaries
    total:      resident + step peak                (the resident part is the same for both)

MF/BP on the step peak therefore falls like 1/L, while MF/BP on the total is bounded below by
resident / (resident + BP's step peak): on a Mixer, whose activations are large (S x D per example
in every block) and whose parameters are few, the activations dominate and the total ratio falls
towards the step ratio. On the 2 x 1000 MLP the parameters (1.8 M, 7 MiB; four times that with
Adam's m and v and the scratch) dominate, a step's activations (N x 1000 numbers per layer, 0.5 MiB
at N = 128) are small beside the gradients of one 1000 x 1000 layer (4 MiB), which MF computes too,
and the ratio is about 1, as Spyra & Dzwinel (BeyondBackpropagation, PPAM 2026) measured it.
"""
import argparse
import sys

import numpy as np

from minimf.argtypes import positive_int
from minimf.backend import BACKENDS, BackendError, get_backend
from minimf.experiments.measure import (MIB, MLP_2X1000, TracemallocMeter, memory_meter, mixer_step_memory,
                                        mlp_step_memory)

IMAGES = {"pathmnist": ((3, 28, 28), 9), "mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10)}
DEFAULT_DEPTHS = [2, 4, 8, 16]
LR = 1e-3
SEED = 0
CLAIM = 0.31                         # MF v2: MF needs 31% of BP's memory on MLP-Mixers (PathMNIST)
SPYRA_DZWINEL = (51.04, 50.90)       # MiB, MF and BP, 2 x 1000 MLP, allocator's peak


def build_parser():
    p = argparse.ArgumentParser(prog="python benchmarks/mixer_memory.py",
                                description="Peak memory of one MF and one BP training step on MLP-Mixers.")
    p.add_argument("--backend", choices=BACKENDS, default="numpy",
                   help="numpy: tracemalloc; cupy: a hook on CuPy's memory pool (default: numpy)")
    p.add_argument("--image", choices=list(IMAGES), default="pathmnist",
                   help="the images' shape and classes: pathmnist (3, 28, 28), 9 classes; mnist; cifar10 "
                        "(default: pathmnist)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="examples per step (default: 128)")
    p.add_argument("--depths", type=positive_int, nargs="+", default=DEFAULT_DEPTHS, metavar="L",
                   help=f"Mixer depths to measure (default: {' '.join(map(str, DEFAULT_DEPTHS))})")
    p.add_argument("--patch", type=positive_int, default=4, help="patch size P (default: 4)")
    p.add_argument("--width", type=positive_int, default=128, help="channels D (default: 128)")
    p.add_argument("--token-hidden", type=positive_int, default=64, help="token MLP hidden size (default: 64)")
    p.add_argument("--channel-hidden", type=positive_int, default=512,
                   help="channel MLP hidden size (default: 512)")
    p.add_argument("--no-mlp", action="store_true", help="skip the 2 x 1000 MLP")
    return p


def row(label, result):
    (mf_res, mf_step, mf_n), (bp_res, bp_step, bp_n) = result["MF"], result["BP"]
    mf_total, bp_total = mf_res + mf_step, bp_res + bp_step
    return (f"  {label:>6} {mf_n / 1e6:>6.2f} {bp_n / 1e6:>6.2f}  {mf_res / MIB:>8.1f} {bp_res / MIB:>8.1f}  "
            f"{mf_step / MIB:>8.1f} {bp_step / MIB:>8.1f} {mf_step / bp_step:>6.0%}  "
            f"{mf_total / MIB:>8.1f} {bp_total / MIB:>8.1f} {mf_total / bp_total:>6.0%}")


HEADER = (f"  {'':>6} {'params (M)':>13}  {'resident MiB':>17}  {'step peak MiB':>24}  {'total MiB':>24}\n"
          f"  {'depth':>6} {'MF':>6} {'BP':>6}  {'MF':>8} {'BP':>8}  {'MF':>8} {'BP':>8} {'MF/BP':>6}  "
          f"{'MF':>8} {'BP':>8} {'MF/BP':>6}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        xp = get_backend(args.backend)
    except BackendError as err:
        build_parser().error(str(err))
    shape, classes = IMAGES[args.image]
    if shape[1] % args.patch or shape[2] % args.patch:
        build_parser().error(f"--patch {args.patch} does not tile {shape[1]}x{shape[2]} images")
    sizes = dict(patch=args.patch, width=args.width, token_hidden=args.token_hidden,
                 channel_hidden=args.channel_hidden)
    patches = (shape[1] // args.patch) * (shape[2] // args.patch)
    with memory_meter(xp) as meter:
        how = "tracemalloc" if isinstance(meter, TracemallocMeter) else "CuPy pool hook"
        print(f"Memory of one training step ({how}; numpy {np.__version__}, float32, Adam lr {LR:g}): MF vs BP")
        print(f"  Mixer     {args.image} images {shape}, {args.patch}x{args.patch} patches (S = {patches}), "
              f"width {args.width}, token hidden {args.token_hidden}, channel hidden {args.channel_hidden}, "
              f"{classes} classes")
        print(f"  batch     {args.batch_size} random examples; resident = parameters + optimiser state after a "
              f"warm-up step;\n            step peak = the peak during one train_step above it; total = both")
        print()
        print(HEADER)
        results = mixer_step_memory(xp, shape, classes, args.depths, sizes, args.batch_size, meter, seed=SEED, lr=LR,
                                    say=lambda depth: print(f"  measuring depth {depth} ...", file=sys.stderr,
                                                            flush=True))
        totals = []
        for depth, result in results.items():
            totals.append(sum(result["MF"][:2]) / sum(result["BP"][:2]))
            print(row(str(depth), result))
        if not args.no_mlp:
            print()
            print(f"  the 2 x 1000 MLP ({'-'.join(map(str, MLP_2X1000))}, MNIST's 784 inputs, 10 classes), "
                  f"same batch size:")
            print(row("MLP", mlp_step_memory(xp, args.batch_size, meter, seed=SEED, lr=LR)))
        print()
        print(f"MF v2's claim: MF needs {CLAIM:.0%} of BP's memory on MLP-Mixers (PathMNIST; its Mixer's size, "
              f"batch and\n  meter could not be read). Here, total MF/BP: "
              + ", ".join(f"depth {d} {r:.0%}" for d, r in zip(args.depths, totals)) + ".")
        print(f"Spyra & Dzwinel, 2 x 1000 MLP, allocator's peak: MF {SPYRA_DZWINEL[0]:.2f} MiB, BP "
              f"{SPYRA_DZWINEL[1]:.2f} MiB (MF/BP {SPYRA_DZWINEL[0] / SPYRA_DZWINEL[1]:.0%}; PyTorch, their batch).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
