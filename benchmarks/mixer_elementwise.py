"""The MLP-Mixer's element-wise work on NumPy: GELU in cache-sized pieces against GELU in one piece.

    python benchmarks/mixer_elementwise.py                        # the default Mixer, batch 256, 3 rounds
    python benchmarks/mixer_elementwise.py --rounds 1 --repeats 3 --batch-size 64    # a quick look
    git show COMMIT:minimf/nn/mixer.py > /tmp/before.py
    python benchmarks/mixer_elementwise.py --before /tmp/before.py   # also the code of another commit

On NumPy, GELU's forward and backward (minimf/nn/mixer.py) run their passes over pieces of
CACHE_PIECE numbers (minimf/nn/pieces.py). Each round times, for every variant in turn,

* ``pieces``: the code as it is;
* ``one piece``: the same code with every array in one piece (as on CuPy);
* ``before`` (with ``--before FILE``): GELU and layer normalisation taken from FILE, a mixer.py of
  another commit, put in place of the current ones;

and in each variant GELU forward and backward on the channel MLP's hidden array (N, S, H_c), layer
normalisation forward and backward on a block's (N, S, D), and one ``train_step`` of MF and of BP
on the default Mixer (width 128, 4 blocks, 4 x 4 patches of 28 x 28 images), each the median of
``--repeats`` calls. Alternating the variants round by round lets a noisy moment of a shared machine
hit them alike; read the ranges over rounds and the ratios, not one figure.
"""
import argparse
import contextlib
import importlib.util
import statistics
import sys

import numpy as np

from blas_threads import blas_kernel, run_with_threads  # benchmarks/blas_threads.py, beside this script
from minimf.argtypes import positive_int
from minimf.experiments.measure import seconds_of
from minimf.nn import mixer
from minimf.rules.mixer import BackpropMixer, MonoForwardMixer

SWAPPED = ("gelu_forward", "gelu_backward", "layer_norm_forward", "layer_norm_backward")
COLUMNS = ("GELU fwd", "GELU bwd", "LN fwd", "LN bwd", "MF step", "BP step")


def build_parser():
    p = argparse.ArgumentParser(prog="python benchmarks/mixer_elementwise.py",
                                description="Time the Mixer's GELU and layer norm, in pieces and in one piece.")
    p.add_argument("--batch-size", type=positive_int, default=256, help="examples per step (default: 256)")
    p.add_argument("--rounds", type=positive_int, default=3, help="rounds over all variants (default: 3)")
    p.add_argument("--repeats", type=positive_int, default=5,
                   help="calls per timing; the median is kept (default: 5)")
    p.add_argument("--before", metavar="FILE", help="a mixer.py whose GELU and layer norm to time as well")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="NumPy's BLAS threads (needs threadpoolctl; default: as the environment sets them)")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_with_threads(parser, args.threads, lambda: run(args))


def load_before(path):
    """The functions SWAPPED of the module in the file ``path``."""
    spec = importlib.util.spec_from_file_location("mixer_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: getattr(module, name) for name in SWAPPED}


@contextlib.contextmanager
def patched(names):
    """minimf.nn.mixer with the attributes ``names`` (a dict) in place, restored afterwards."""
    saved = {name: getattr(mixer, name) for name in names}
    for name, value in names.items():
        setattr(mixer, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(mixer, name, value)


def median_ms(fn, repeats):
    """The median wall time of ``repeats`` calls of ``fn()`` in ms, after one call to warm up."""
    fn()
    return 1e3 * statistics.median([seconds_of(fn) for _ in range(repeats)])


def timers(batch_size):
    """{column: fn}: the calls of COLUMNS, on the default Mixer's shapes at ``batch_size``."""
    rng = np.random.default_rng(0)
    mf, bp = MonoForwardMixer(seed=0), BackpropMixer(seed=0)
    gh, gw = mixer.patch_grid(mf.input_shape, mf.patch)
    N, S, D, H_c = batch_size, gh * gw, mf.width, mf.channel_hidden
    z = rng.standard_normal((N, S, H_c), dtype=np.float32)
    dh = rng.standard_normal(z.shape, dtype=np.float32)
    x = rng.standard_normal((N, S, D), dtype=np.float32)
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    gamma, beta = np.ones(D, np.float32), np.zeros(D, np.float32)
    images = rng.random((N, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, N)
    gelu_cache = mixer.gelu_forward(z)[1]                         # the same numbers in every variant
    ln_cache = mixer.layer_norm_forward(x, gamma, beta)[1]
    return {"GELU fwd": lambda: mixer.gelu_forward(z),
            "GELU bwd": lambda: mixer.gelu_backward(dh, gelu_cache),
            "LN fwd": lambda: mixer.layer_norm_forward(x, gamma, beta),
            "LN bwd": lambda: mixer.layer_norm_backward(dy, ln_cache),
            "MF step": lambda: mf.train_step(images, labels),
            "BP step": lambda: bp.train_step(images, labels)}


def run(args):
    variants = {"pieces": {}, "one piece": {"host_pieces": lambda arrays, piece=None: [None]}}
    if args.before:
        variants["before"] = load_before(args.before)
    calls = timers(args.batch_size)
    times = {(v, c): [] for v in variants for c in COLUMNS}       # ms, one median per round
    for _ in range(args.rounds):
        for variant, names in variants.items():
            with patched(names):
                for column, fn in calls.items():
                    times[variant, column].append(median_ms(fn, args.repeats))
    print_report(args, variants, times)
    return 0


def print_report(args, variants, times):
    print(f"The default Mixer, batch {args.batch_size}, float32; ms, the range over {args.rounds} rounds "
          f"of the median of {args.repeats} calls")
    print(f"  BLAS: {blas_kernel()}")
    print(f"  {'variant':<20}" + "".join(f"{c:>14}" for c in COLUMNS))
    for variant in variants:
        cells = [f"{min(t):.1f}-{max(t):.1f}" for t in (times[variant, c] for c in COLUMNS)]
        print(f"  {variant:<20}" + "".join(f"{cell:>14}" for cell in cells))
    for variant in variants:
        if variant != "pieces":                                   # per round, then the range
            ratios = [[p / o for p, o in zip(times["pieces", c], times[variant, c])] for c in COLUMNS]
            cells = [f"{min(r):.2f}-{max(r):.2f}" for r in ratios]
            print(f"  {'pieces / ' + variant:<20}" + "".join(f"{cell:>14}" for cell in cells))


if __name__ == "__main__":
    sys.exit(main())
