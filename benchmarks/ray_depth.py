"""Mono-Forward's layers as Ray actors at depth 2, 4 and 8: measured epochs beside a model.

    OPENBLAS_NUM_THREADS=1 python benchmarks/ray_depth.py                 # depths 2 4 8, width 1000
    OPENBLAS_NUM_THREADS=1 python benchmarks/ray_depth.py --fraction 0.1 --depths 2 4
    python benchmarks/ray_depth.py --links 1 10 100                       # links for the L-machine forecast

What it measures, in one run, on random inputs (N, 784) (the cost of a step does not depend on the
values), batch 256, Adam, float32, one BLAS thread per layer:

    w_i      the seconds of layer i's step (``train_layer``: forward, local loss, gradients, update),
             run inline in this process: the work each layer has to do per batch
    T(L)     the seconds of ``--fraction`` of an epoch with the L layers as Ray actors on a local Ray
             instance (minimf/parallel/ray_pipeline.py), each given min(1, P / L) of this machine's
             P cores, so that depth 8 runs on 2 cores too (eight actors of a quarter CPU each)

The model. S batches travel in groups of k (``BATCHES_PER_CALL``); a layer cannot start a group
before the layer below has finished it, so the pipeline fills and drains once, k (L - 1) batches
long. The epoch is bounded twice, and takes the larger of the two bounds:

    slowest layer   (S + k (L - 1)) * max_i (w_i + h)          each actor runs its batches in turn,
                                                                after the fill
    cores           S * (sum_i w_i + (L - 1) h + d) / P        all the work, shared by P cores
    T(L) = max(slowest layer, cores)

The first bound rules when every layer has a core of its own, the second when the layers share
the machine's cores (depth 4 and 8 on 2 cores: there the fill costs nothing, since the layers
that have work use the cores the waiting ones leave free). h is what one
hand-off costs the two processes at a layer boundary (Ray's serialisation of a_i into the object
store and back, the call's bookkeeping), d the driver's cost per batch. Both are fitted from ONE
measurement, depth 2 (with h = d, the simplest assumption that the data allow to fit), and the
model then PREDICTS the other depths: the table shows the prediction beside the measurement.

On L machines (one layer each, P = L) the second term falls away, and the link adds its transfer
of a_i, N * H * 4 bytes per batch per boundary, which overlaps the next batch's compute:

    period_L_machines = max( max_i (w_i + h),  N * H * 4 bytes / link )
    speed-up against one machine running the layers one after another = S sum_i w_i / T

It stops scaling (1) when the transfer of a_i takes longer than a layer's step (a slow link or
very cheap layers) and (2) as the fill k (L - 1) approaches S: at S = 235 batches (one MNIST
epoch) and k = 4, a 60-layer pipeline spends as long filling as working.
"""
import argparse
import math
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # minimf from this checkout

import numpy as np

from minimf import MonoForwardNet
from minimf.experiments.measure import seconds_of
from minimf.parallel.ray_pipeline import BATCHES_PER_CALL, RayPipeline, RayPipelineError, import_ray
from minimf.rules.mono_forward import train_layer

BATCH, INPUT, CLASSES, EPOCH = 256, 784, 10, 60000


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8], help="hidden layers (default: 2 4 8)")
    p.add_argument("--width", type=int, default=1000, help="units per layer (default: 1000)")
    p.add_argument("--fraction", type=float, default=0.5, help="part of a 60,000-example epoch (default: 0.5)")
    p.add_argument("--links", type=float, nargs="+", default=[1, 10], metavar="GBIT",
                   help="link speeds in Gbit/s for the L-machine forecast (default: 1 10)")
    return p


def random_batches(fraction, seed=0):
    """Batches of BATCH random inputs (N, 784) and labels (N,), ``fraction`` of a 60,000-example epoch."""
    rng = np.random.default_rng(seed)
    n = max(BATCH, int(EPOCH * fraction))
    x = rng.standard_normal((n, INPUT)).astype("float32")
    y = rng.integers(0, CLASSES, n)
    return [(x[s:s + BATCH], y[s:s + BATCH]) for s in range(0, n, BATCH)]


def layer_work(depth, width, data):
    """w_i: the median seconds of each layer's step, run inline, one BLAS thread."""
    net = MonoForwardNet(sizes=[INPUT] + [width] * depth, num_classes=CLASSES, seed=0)
    times = [[] for _ in net.layers]
    for x, y in data:
        for i, (layer, optimizer) in enumerate(zip(net.layers, net.optimizers)):
            out = []
            times[i].append(seconds_of(lambda: out.append(train_layer(layer, optimizer, x, y))))
            x, _, _ = out[0]                                               # a_i, the next layer's input
    return [statistics.median(t) for t in times]


def ray_epoch(depth, width, data, cores):
    """T(L): seconds to train on ``data`` with the layers as actors (actors started before timing)."""
    net = MonoForwardNet(sizes=[INPUT] + [width] * depth, num_classes=CLASSES, seed=0)
    with RayPipeline(net, cpus_per_layer=min(1.0, cores / depth)) as pipeline:
        pipeline.train(data[:2 * BATCHES_PER_CALL], validate=False)         # warm-up
        return seconds_of(lambda: pipeline.train(data, validate=False))


def predicted(work, h, d, cores, steps, k=BATCHES_PER_CALL):
    """T(L) of the model: the larger of the slowest-layer and the cores bound."""
    L = len(work)
    slowest_layer = (steps + k * (L - 1)) * (max(work) + h)
    all_cores = steps * (sum(work) + (L - 1) * h + d) / cores
    return max(slowest_layer, all_cores)


def fit_overhead(work, measured, cores, steps):
    """h (= d) such that the model gives the measured time: bisection on [0, 1] s."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if predicted(work, mid, mid, cores, steps) < measured else (lo, mid)
    return (lo + hi) / 2


def main(argv=None):
    args = build_parser().parse_args(argv)
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        print("note: set OPENBLAS_NUM_THREADS=1 so that the inline steps use one BLAS thread, as the actors do",
              file=sys.stderr)
    cores = os.cpu_count()
    data = random_batches(args.fraction)
    steps = len(data)
    ray = import_ray()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"MF, width {args.width}, batch {BATCH}, {steps} batches ({args.fraction:g} of an epoch), "
          f"{cores} cores, groups of k = {BATCHES_PER_CALL} batches per call")
    rows = []
    for depth in args.depths:
        work = layer_work(depth, args.width, data)
        try:
            measured = ray_epoch(depth, args.width, data, cores)
        except RayPipelineError as err:
            raise SystemExit(f"error: depth {depth}: {err}") from None
        rows.append((depth, work, measured))
    depth0, work0, measured0 = rows[0]
    h = fit_overhead(work0, measured0, cores, steps)
    print(f"fitted at depth {depth0}: h = d = {h * 1e3:.2f} ms per hand-off (and per batch for the driver)\n")
    print("depth  sum w_i  max w_i   sequential  Ray measured  model  measured/model  Ray/sequential")
    for depth, work, measured in rows:
        sequential = steps * sum(work)
        model = predicted(work, h, h, cores, steps)
        print(f"{depth:5d}  {sum(work) * 1e3:5.1f} ms {max(work) * 1e3:5.1f} ms  {sequential:8.2f} s  "
              f"{measured:10.2f} s  {model:5.2f} s  {measured / model:12.2f}  {measured / sequential:13.2f}")
    print("\nForecast: L layers on L machines (one layer each), the same steps, a link of B Gbit/s:")
    print("depth  link      transfer/batch  period   forecast  speed-up vs 1 machine")
    for depth, work, _ in rows:
        for gbit in args.links:
            transfer = BATCH * args.width * 4 * 8 / (gbit * 1e9)
            per = max(max(work) + h, transfer)
            forecast = (steps + BATCHES_PER_CALL * (depth - 1)) * per
            print(f"{depth:5d}  {gbit:5g} Gb/s  {transfer * 1e3:8.2f} ms   {per * 1e3:6.2f} ms  {forecast:7.2f} s  "
                  f"{steps * sum(work) / forecast:6.2f}x")
    fill_limit = math.ceil(steps / BATCHES_PER_CALL) + 1
    print(f"\nThe fill k (L - 1) equals the {steps} batches here at L = {fill_limit}; the link costs more than the "
          f"slowest step ({max(rows[0][1]) * 1e3:.1f} ms) below "
          f"{BATCH * args.width * 32 / max(rows[0][1]) / 1e9:.2f} Gbit/s.")
    ray.shutdown()


if __name__ == "__main__":
    main()
