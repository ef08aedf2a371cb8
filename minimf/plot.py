"""python -m minimf.plot: draw the training curves of one or several runs side by side.

    python -m minimf.plot runs/mf                        # writes curves.png here
    python -m minimf.plot runs/mf runs/bp --out mf-bp.png

Each run folder (``python -m minimf.train --out DIR``) keeps every step's loss in losses.json and
its metrics in metrics.json; the picture is minimf/training/curves.py's, the one each run leaves in
DIR/curve.png. An existing picture is never replaced: name another --out.
"""
import argparse
import sys
from pathlib import Path

from minimf.files import atomic_write_bytes
from minimf.training.curves import LOSSES, draw, figure_png


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minimf.plot",
                                description="Draw the training curves of runs side by side.")
    p.add_argument("runs", nargs="+", type=Path, metavar="DIR", help="run folders (python -m minimf.train --out DIR)")
    p.add_argument("--out", type=Path, default=Path("curves.png"), metavar="FILE",
                   help="the picture to write, a new file (default: curves.png)")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    for folder in args.runs:
        missing = [name for name in (LOSSES, "metrics.json") if not (folder / name).is_file()]
        if missing:
            parser.error(f"{folder} holds no run's curve (no {' and no '.join(missing)})")
    if args.out.exists():
        parser.error(f"--out {args.out} exists; name a new file")
    try:
        png = figure_png(draw([str(f) for f in args.runs]))
    except ImportError:
        print('error: drawing needs matplotlib (pip install -e ".[lessons]")', file=sys.stderr)
        return 1
    atomic_write_bytes(args.out, png)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
