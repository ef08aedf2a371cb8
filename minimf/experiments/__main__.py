"""python -m minimf.experiments NAME: rerun one of MF v1's experiments and write its tables and figures.

    python -m minimf.experiments layerwise --quick            # Table 1 on a CPU in minutes
    python -m minimf.experiments memory --quick --out runs/mem
    python -m minimf.experiments mlp --seeds 0 1 2 --epochs 20   # the whole data sets
    python -m minimf.experiments tune --quick --trials 4           # choose lr, schedule, epochs on validation

--quick trains on 5,000 examples and tests on 2,000 for a few epochs (see common.SCALES); without it
the runs use the whole data sets and the paper's sizes. MINIMF_EXPERIMENTS_TINY=1 (or the hidden
--tiny) shrinks everything to seconds, for the tests.
"""
import argparse
import os
import sys
import time
from pathlib import Path

from minimf.backend import BACKENDS, BackendError, get_backend
from minimf.datasets import DatasetError
from minimf.experiments import EXPERIMENTS
from minimf.experiments.common import SCALES, Context, algorithms, write_report
from minimf.argtypes import positive_int

TINY_ENV = "MINIMF_EXPERIMENTS_TINY"
DEFAULT_SEEDS = [0, 1, 2]
SEEDS_OF = {"tune": [0, 1, 2, 3, 4], "decomposition": [0, 1, 2, 3, 4]}  # five: paired intervals and TOST need them


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minimf.experiments",
                                description="Rerun one of MF v1's experiments; write results.md, results.json "
                                            "and PNG figures.")
    p.add_argument("name", choices=list(EXPERIMENTS), metavar="NAME",
                   help=f"the experiment: {', '.join(EXPERIMENTS)}")
    p.add_argument("--quick", action="store_true",
                   help="a CPU-sized run: 5,000 training and 2,000 test examples, few epochs, narrower CNN")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)   # the tests' setting
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="one run per seed, mean ± std over them (default: 0 1 2; tune and decomposition: 0 1 2 3 4)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output folder, refused if it holds a report already (default: runs/experiments/NAME, "
                        "or NAME-2, NAME-3, ... where that holds one)")
    p.add_argument("--backend", choices=BACKENDS, default="numpy", help="array library (default: numpy)")
    p.add_argument("--epochs", type=positive_int, default=None, metavar="E",
                   help="override the experiment's number of epochs")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where downloaded data sets live (default: $MINIMF_DATA, else ~/.cache/minimf)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--trials", type=positive_int, default=None, metavar="N",
                   help="tune: random-search trials per rule (default: 10; --quick 6)")
    p.add_argument("--rules", nargs="+", choices=algorithms("mlp"), default=None, metavar="ALGO",
                   help="tune: the rules tuned, each compared with the first (default: mf bp)")
    return p


REPORT_FILES = ("results.md", "results.json")


class ReportFolderError(Exception):
    """An output folder that cannot take a report: the message says why."""


def report_folder(out, name):
    """Where the report goes, checked before anything is computed: ``out`` if given (a folder that
    can be written and holds no report: an existing one is never overwritten), else
    runs/experiments/NAME, or the first of NAME-2, NAME-3, ... that holds no report."""
    if out is None:
        base = Path("runs") / "experiments" / name
        out, n = base, 1
        while holds_report(out):
            n += 1
            out = base.with_name(f"{name}-{n}")
    elif holds_report(out):
        raise ReportFolderError(f"--out {out} holds a report already ({', '.join(f for f in REPORT_FILES if (out / f).exists())}); "
                                "choose another folder, or move it away")
    if out.exists() and not out.is_dir():
        raise ReportFolderError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".minimf-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ReportFolderError(f"cannot write into {out}: {err.strerror or err}") from None
    return out


def holds_report(folder):
    return any((Path(folder) / name).exists() for name in REPORT_FILES)


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.seeds = args.seeds or SEEDS_OF.get(args.name, DEFAULT_SEEDS)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be different from one another, got {' '.join(map(str, args.seeds))}")
    if args.rules and len(set(args.rules)) != len(args.rules):
        parser.error(f"--rules must be different from one another, got {' '.join(args.rules)}")
    if args.name != "tune" and (args.trials or args.rules):
        parser.error("--trials and --rules are options of tune")
    tiny = args.tiny or os.environ.get(TINY_ENV) == "1"
    if tiny and args.quick:
        parser.error("--quick and the tiny setting exclude each other")
    try:
        get_backend(args.backend)
    except BackendError as err:
        parser.error(str(err))
    scale = SCALES["tiny" if tiny else "quick" if args.quick else "full"]
    try:
        out = report_folder(args.out, args.name)
    except ReportFolderError as err:
        parser.error(str(err))
    ctx = Context(name=args.name, scale=scale, seeds=args.seeds, backend=args.backend, epochs=args.epochs,
                  progress=not args.no_progress, data_dir=args.data_dir, trials=args.trials, rules=args.rules,
                  command=" ".join(["python -m minimf.experiments", *argv]))
    start = time.perf_counter()
    try:
        report = EXPERIMENTS[args.name](ctx)
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    paths = write_report(ctx, report, out, time.perf_counter() - start)
    print((out / "results.md").read_text())
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
