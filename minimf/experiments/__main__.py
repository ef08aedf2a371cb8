"""python -m minimf.experiments NAME: rerun one of MF v1's experiments and write its tables and figures.

    python -m minimf.experiments layerwise --quick            # Table 1 on a CPU in minutes
    python -m minimf.experiments memory --quick --out runs/mem
    python -m minimf.experiments mlp --seeds 0 1 2 --epochs 20   # the whole data sets
    python -m minimf.experiments tune --quick --trials 4           # choose lr, schedule, epochs on validation
    python -m minimf.experiments mixer --resume runs/experiments/mixer   # continue one that was stopped

--quick trains on 5,000 examples and tests on 2,000 for a few epochs (see common.SCALES); without it
the runs use the whole data sets and the paper's sizes. MINIMF_EXPERIMENTS_TINY=1 (or the hidden
--tiny) shrinks everything to seconds, for the tests.

Every finished training is kept in the output folder as it finishes (minimf/experiments/journal.py),
and the folder is locked while the experiment runs. An experiment stopped by Ctrl-C or SIGTERM (or
killed) continues with ``--resume DIR``: the settings recorded in DIR/experiment.json, the finished
trainings read back, the others trained; any option given with --resume must repeat the recorded one.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

from minimf.backend import BACKENDS, BackendError, get_backend
from minimf.datasets import DatasetError
from minimf.experiments import EXPERIMENTS
from minimf.experiments.common import SCALES, Context, algorithms, write_report
from minimf.experiments.journal import SETTINGS_FILE, Journal, JournalError
from minimf.experiments.workers import SIDE_BY_SIDE, WorkerError
from minimf.files import atomic_write_json
from minimf.run_folder import RunFolderError, RunLock
from minimf.training.loop import EXIT_INTERRUPTED, Interrupted, sigterm_stops
from minimf.argtypes import positive_int

TINY_ENV = "MINIMF_EXPERIMENTS_TINY"
DEFAULT_SEEDS = [0, 1, 2]
SEEDS_OF = {"tune": [0, 1, 2, 3, 4], "decomposition": [0, 1, 2, 3, 4]}  # five: paired intervals and TOST need them


def build_parser(defaults=True):
    """The parser; ``defaults=False`` leaves out the options not given (for --resume)."""
    p = argparse.ArgumentParser(prog="python -m minimf.experiments",
                                description="Rerun one of MF v1's experiments; write results.md, results.json "
                                            "and PNG figures.", argument_default=argparse.SUPPRESS)
    p.add_argument("name", choices=list(EXPERIMENTS), metavar="NAME",
                   help=f"the experiment: {', '.join(EXPERIMENTS)}")
    p.add_argument("--quick", action="store_true",
                   help="a CPU-sized run: 5,000 training and 2,000 test examples, few epochs, narrower CNN")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)   # the tests' setting
    p.add_argument("--seeds", type=int, nargs="+", metavar="S",
                   help="one run per seed, mean ± std over them (default: 0 1 2; tune and decomposition: 0 1 2 3 4)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder, refused if it holds a report or an unfinished experiment (default: "
                        "runs/experiments/NAME, or NAME-2, NAME-3, ... where that holds one)")
    p.add_argument("--resume", type=Path, metavar="DIR",
                   help="continue the experiment stopped in DIR with its recorded settings: its finished "
                        "trainings are read back, the others trained")
    p.add_argument("--backend", choices=BACKENDS, help="array library (default: numpy)")
    p.add_argument("--epochs", type=positive_int, metavar="E",
                   help="override the experiment's number of epochs")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where downloaded data sets live (default: $MINIMF_DATA, else ~/.cache/minimf)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--jobs", type=positive_int, metavar="N",
                   help="tune, mixer, decomposition: trainings side by side in N worker processes, each with "
                        "cpus/N BLAS threads (default: 1, one after another; the numbers are the same)")
    p.add_argument("--trials", type=positive_int, metavar="N",
                   help="tune: random-search trials per rule (default: 10; --quick 6)")
    p.add_argument("--rules", nargs="+", choices=algorithms("mlp"), metavar="ALGO",
                   help="tune: the rules tuned, each compared with the first (default: mf bp)")
    if defaults:
        p.set_defaults(quick=False, tiny=False, seeds=None, out=None, resume=None, backend="numpy", epochs=None,
                       data_dir=None, no_progress=False, trials=None, rules=None, jobs=1)
    return p


REPORT_FILES = ("results.md", "results.json")
# the options that decide an experiment's numbers, and the setting of DIR/experiment.json each one gives
SETTING_OF_OPTION = {"quick": "scale", "tiny": "scale", "seeds": "seeds", "backend": "backend", "epochs": "epochs",
                     "data_dir": "data_dir", "trials": "trials", "rules": "rules"}


class ReportFolderError(Exception):
    """An output folder that cannot take a report: the message says why."""


def report_folder(out, name):
    """Where the report goes, checked before anything is computed: ``out`` if given (a folder that
    can be written and holds no report and no unfinished experiment: neither is ever overwritten),
    else runs/experiments/NAME, or the first of NAME-2, NAME-3, ... that holds neither."""
    if out is None:
        base = Path("runs") / "experiments" / name
        out, n = base, 1
        while holds_report(out) or holds_experiment(out):
            n += 1
            out = base.with_name(f"{name}-{n}")
    elif holds_report(out):
        raise ReportFolderError(f"--out {out} holds a report already ({', '.join(f for f in REPORT_FILES if (out / f).exists())}); "
                                "choose another folder, or move it away")
    elif holds_experiment(out):
        raise ReportFolderError(f"--out {out} holds an unfinished experiment ({Journal(out).count()} finished "
                                f"trainings); continue it with --resume {out}, or choose another folder")
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


def holds_experiment(folder):
    """An experiment was started in ``folder``: its settings or its finished trainings are there."""
    return (Path(folder) / SETTINGS_FILE).exists() or Journal(folder).folder.exists()


def experiment_settings(args, tiny):
    """The settings that decide an experiment's numbers, as DIR/experiment.json records them."""
    return {"name": args.name, "scale": "tiny" if tiny else "quick" if args.quick else "full",
            "seeds": args.seeds, "backend": args.backend, "epochs": args.epochs, "data_dir": args.data_dir,
            "trials": args.trials, "rules": args.rules}


def recorded_settings(folder, settings, given):
    """The settings of the experiment to continue in ``folder``: those its experiment.json recorded.
    ``settings`` (experiment_settings of this command) must repeat them for every option in ``given``
    and for the experiment's name. Raises ReportFolderError."""
    folder = Path(folder)
    if holds_report(folder):
        raise ReportFolderError(f"--resume {folder}: it holds a finished experiment's report; nothing to resume")
    try:
        recorded = json.loads((folder / SETTINGS_FILE).read_text())
        command, recorded = recorded["command"], recorded["settings"]
    except FileNotFoundError:
        raise ReportFolderError(f"--resume {folder}: no experiment was started there (no {SETTINGS_FILE})") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ReportFolderError(f"--resume {folder}: {SETTINGS_FILE} cannot be read ({err!r})") from None
    wrong = [key for key in ["name"] + [SETTING_OF_OPTION[d] for d in given if d in SETTING_OF_OPTION]
             if settings[key] != recorded.get(key)]
    if wrong:
        differ = ", ".join(f"{key} {_words(settings[key])} (recorded: {_words(recorded.get(key))})"
                           for key in dict.fromkeys(wrong))
        raise ReportFolderError(f"--resume {folder}: {differ} contradicts the experiment recorded there ({command}); "
                                "leave the option out to resume as recorded")
    return recorded, command


def _words(value):
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


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
    if args.jobs > 1 and args.name not in SIDE_BY_SIDE:
        parser.error(f"--jobs is an option of {', '.join(SIDE_BY_SIDE)}; {args.name} trains one run after another")
    tiny = args.tiny or os.environ.get(TINY_ENV) == "1"
    if tiny and args.quick:
        parser.error("--quick and the tiny setting exclude each other")
    if args.resume and args.out:
        parser.error("--out and --resume exclude each other: an experiment continues in its own folder")
    settings, command = experiment_settings(args, tiny), " ".join(["python -m minimf.experiments", *argv])
    try:
        if args.resume:
            given = vars(build_parser(defaults=False).parse_args(argv))
            if os.environ.get(TINY_ENV) == "1":
                given["tiny"] = True
            settings, command = recorded_settings(args.resume, settings, given)
            out = args.resume
        else:
            out = report_folder(args.out, args.name)
        get_backend(settings["backend"])
    except (ReportFolderError, BackendError) as err:
        parser.error(str(err))
    ctx = Context(name=args.name, scale=SCALES[settings["scale"]], seeds=settings["seeds"],
                  backend=settings["backend"], epochs=settings["epochs"], progress=not args.no_progress,
                  data_dir=settings["data_dir"], trials=settings["trials"], rules=settings["rules"],
                  command=command, journal=Journal(out), jobs=args.jobs)
    try:
        with RunLock(out):
            check_still_free(out, resumed=bool(args.resume))
            return run_experiment(ctx, out, settings, resumed=bool(args.resume))
    except RunFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def check_still_free(out, resumed):
    """Under the folder's lock: no other experiment finished in ``out`` (or, for a new one, started
    there) between the checks above and the lock. Raises RunFolderError."""
    if holds_report(out) or (not resumed and holds_experiment(out)):
        raise RunFolderError(f"another experiment used {out} meanwhile; nothing was written, run the command again")


def run_experiment(ctx, out, settings, resumed):
    """Record ``settings`` (a new experiment), run it with its journal and write its report; a stop
    by Ctrl-C or SIGTERM keeps the finished trainings and says how to continue."""
    kept_before = ctx.journal.count()          # finished by an earlier, stopped run of this command
    if resumed:
        print(f"resuming {ctx.name} in {out}: {kept_before} finished trainings are kept", file=sys.stderr)
    else:
        atomic_write_json(out / SETTINGS_FILE, {"command": ctx.command, "settings": settings})
    start = time.perf_counter()
    try:
        with sigterm_stops():
            report = EXPERIMENTS[ctx.name](ctx)
        if kept_before:
            report.notes.append(f"Resumed: {kept_before} trainings were read back from an earlier, stopped run "
                                f"of this command ({out / 'runs'}); the wall time counts this run only.")
    except (DatasetError, JournalError, WorkerError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt) as stop:
        signal_name = getattr(stop, "signal_name", "SIGINT")
        print(f"stopped ({signal_name}): {ctx.journal.count()} finished trainings are kept in {out / 'runs'}; "
              f"continue with: python -m minimf.experiments {ctx.name} --resume {out}", file=sys.stderr)
        return EXIT_INTERRUPTED[signal_name]
    paths = write_report(ctx, report, out, time.perf_counter() - start)
    print((out / "results.md").read_text())
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
