"""Where the time of one Mono-Forward training step goes, operation by operation.

    python benchmarks/profile_step.py                     # 784-1000-1000, batch 256, 1 BLAS thread
    python benchmarks/profile_step.py --threads 2 --repeats 50
    python benchmarks/profile_step.py --hidden 500 500 --batch-size 128

One MF step on the MLP (``MonoForwardModel.train_step``) is, per layer i (minimf/rules/mono_forward.py):

    z = x W + b          product (N, D) @ (D, H), then the bias added       dense_forward
    a = relu(z)                                                             relu_forward
    G = a M^T            (5) product (N, H) @ (H, C)
    loss, dG             (6) softmax cross-entropy                          softmax_cross_entropy
    dM = dG^T a          (7) product (C, N) @ (N, H)
    da = dG M            product (N, C) @ (C, H)
    dz = da * 1[z > 0]   ReLU backward                                      relu_backward
    dW = x^T dz, db      (8) product (D, N) @ (N, H), and the column sums   dense_param_grads
    Adam on W, b, M      the optimiser's element-wise passes                Adam.step

and once per step: the batch gathered from the data set by its indices (``x[idx]``, a copy), the
input checks (``check_features``, ``check_labels``: shapes, dtype, NaN/inf, label range) and the
losses converted to Python floats.

Each operation is timed ALONE, with the arrays of a real step (standardised MNIST, a fresh
network), as the median of ``--repeats`` calls; the whole ``train_step`` is timed the same way,
and the last line compares it with the sum of the parts (the difference: Python overhead between
the operations, and caches warmed or cooled by neighbours). The products also show their GFLOP/s.
Read the shares, not the milliseconds: the machine is shared.
"""
import argparse
import statistics
import sys

import numpy as np

from blas_threads import blas_kernel, kernel_warning, run_with_threads  # benchmarks/blas_threads.py, beside this script
from epoch_time import standardised_mnist
from minimf import MonoForwardNet
from minimf.checks import check_features, check_labels
from minimf.experiments.measure import seconds_of
from minimf.nn.layers import dense_forward, relu_backward, relu_forward
from minimf.nn.losses import softmax_cross_entropy
from minimf.nn.optim import Adam
from minimf.argtypes import positive_int

NUM_CLASSES = 10


def build_parser():
    p = argparse.ArgumentParser(prog="python benchmarks/profile_step.py",
                                description="Time every operation of one Mono-Forward training step.")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=[1000, 1000], metavar="H",
                   help="hidden layer widths (default: 1000 1000)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="examples per step (default: 256)")
    p.add_argument("--repeats", type=positive_int, default=30,
                   help="calls per operation; the median is shown (default: 30)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="NumPy's BLAS threads (needs threadpoolctl; default: 1)")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_with_threads(parser, args.threads, lambda: run(args))


def median_seconds(fn, repeats):
    """The median wall time of ``repeats`` calls of ``fn()``, after one call to warm up."""
    fn()
    return statistics.median([seconds_of(fn) for _ in range(repeats)])


def step_operations(net, x_all, y_all, idx):
    """[(name, kind, fn, flops)]: every operation of one MF step, each a call with real arrays.

    ``kind`` groups them: product, relu, softmax, bias, adam, data, check. ``flops`` is 2*m*n*k
    for a product (m, k) @ (k, n), else 0.
    """
    x, y = net.check_batch(x_all[idx], y_all[idx])
    n = x.shape[0]
    ops = [("gather x[idx], y[idx]", "data", lambda: (x_all[idx], y_all[idx]), 0),
           ("check_features", "check", lambda x=x: check_features(x, net.input_shape, net.xp, net.dtype), 0),
           ("check_labels", "check", lambda: check_labels(y, n, net.num_classes, net.xp), 0)]
    for i, layer in enumerate(net.layers, start=1):
        d, h = layer.W.shape
        c = layer.M.shape[0]
        z, _ = dense_forward(x, layer.W, layer.b)
        a, relu_cache = relu_forward(z.copy())
        G = a @ layer.M.T
        _, dG = softmax_cross_entropy(G, y)
        da = dG @ layer.M
        dz = relu_backward(da.copy(), relu_cache)
        grads = {"W": x.T @ dz, "b": dz.sum(axis=0), "M": dG.T @ a}
        ops += [(f"L{i} z = x W        ({n}x{d} @ {d}x{h})", "product", lambda x=x, l=layer: x @ l.W, 2 * n * d * h),
                (f"L{i} z += b", "bias", lambda z=z, l=layer: z.__iadd__(l.b), 0),
                (f"L{i} relu forward", "relu", lambda z=z: relu_forward(z, out=z), 0),
                (f"L{i} G = a M^T      ({n}x{h} @ {h}x{c})", "product", lambda a=a, l=layer: a @ l.M.T, 2 * n * h * c),
                (f"L{i} softmax cross-entropy", "softmax", lambda G=G: softmax_cross_entropy(G, y), 0),
                (f"L{i} dM = dG^T a    ({c}x{n} @ {n}x{h})", "product", lambda dG=dG, a=a: dG.T @ a, 2 * c * n * h),
                (f"L{i} da = dG M      ({n}x{c} @ {c}x{h})", "product", lambda dG=dG, l=layer: dG @ l.M, 2 * n * c * h),
                (f"L{i} relu backward", "relu", lambda da=da, r=relu_cache: relu_backward(da, r, out=da), 0),
                (f"L{i} dW = x^T dz    ({d}x{n} @ {n}x{h})", "product", lambda x=x, dz=dz: x.T @ dz, 2 * d * n * h),
                (f"L{i} db = sum dz", "bias", lambda dz=dz: dz.sum(axis=0), 0)]
        ops += adam_operations(i, layer, grads)
        x = a
    ops.append(("losses to float", "data", lambda G=G: float(softmax_cross_entropy(G, y)[0]), 0))
    return ops


def adam_operations(i, layer, grads):
    """Adam's step on copies of layer i's W, b and M (the network itself is not changed)."""
    ops = []
    for name, g in grads.items():
        if g is None:
            continue
        params = {name: layer.params[name].copy()}
        opt = Adam(lr=1e-3)
        opt.step(params, {name: g})   # m and v exist from here on, as in training
        ops.append((f"L{i} Adam {name} {tuple(g.shape)}", "adam",
                    lambda o=opt, p=params, n=name, g=g: o.step(p, {n: g}), 0))
    return ops


def run(args):
    x_all, y_all = standardised_mnist()
    net = MonoForwardNet(sizes=[x_all.shape[1], *args.hidden], num_classes=NUM_CLASSES, seed=0)
    idx = np.random.default_rng(0).permutation(len(y_all))[:args.batch_size]
    rows = [(name, kind, median_seconds(fn, args.repeats), flops)
            for name, kind, fn, flops in step_operations(net, x_all, y_all, idx)]
    whole = median_seconds(lambda: net.train_step(x_all[idx], y_all[idx]), args.repeats)
    print_report(args, rows, whole)
    return 0


def print_report(args, rows, whole):
    total = sum(s for _, _, s, _ in rows)
    sizes = "-".join(map(str, [784, *args.hidden]))
    print(f"One MF training step, MLP {sizes}, batch {args.batch_size}, float32, Adam; "
          f"BLAS threads {args.threads}; median of {args.repeats} calls per operation")
    print(f"  BLAS: {blas_kernel()}")
    print(kernel_warning())
    print(f"  {'operation':<42} {'ms':>8} {'share':>7} {'GFLOP/s':>8}")
    for name, kind, seconds, flops in rows:
        rate = f"{flops / seconds / 1e9:8.1f}" if flops else ""
        print(f"  {name:<42} {1e3 * seconds:8.3f} {100 * seconds / total:6.1f}% {rate:>8}")
    print()
    print("  by kind:")
    for kind in dict.fromkeys(k for _, k, _, _ in rows):
        seconds = sum(s for _, k, s, _ in rows if k == kind)
        flops = sum(f for _, k, _, f in rows if k == kind)
        rate = f"  {flops / seconds / 1e9:.1f} GFLOP/s" if flops else ""
        print(f"  {kind:<10} {1e3 * seconds:8.3f} ms {100 * seconds / total:6.1f}%{rate}")
    print()
    print(f"  sum of the operations {1e3 * total:.3f} ms; whole train_step {1e3 * whole:.3f} ms "
          f"(ratio {whole / total:.2f})")


if __name__ == "__main__":
    sys.exit(main())
