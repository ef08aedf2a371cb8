"""A run's folder (``python -m minimf.train --out DIR``): what is in it, its checkpoints, and the rule
that nothing a user made is overwritten by surprise.

    DIR/config.json      every setting (and the arguments as given, so that --resume can repeat them)
    DIR/metrics.json     one record per finished epoch
    DIR/model.npz        the parameters after the last finished epoch (``minimf.checkpoint.load``)
    DIR/checkpoints/epoch-0003-step-000040/   a whole training state (minimf/checkpoint.py): here
                         40 steps into epoch 3; "step-000000" is the start of an epoch, i.e. the
                         end of the one before. The newest two are kept, so that a damaged newest
                         one falls back to the one before.

``--out DIR`` on a folder that already holds a run is refused unless ``--resume DIR`` (continue it)
or ``--overwrite`` (which removes only the files above, nothing else in the folder).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from minimf.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

RUN_FILES = ("config.json", "metrics.json", "model.npz")
CHECKPOINTS = "checkpoints"
KEEP = 2   # checkpoints kept: the newest, and the one before in case the newest is damaged


class RunFolderError(Exception):
    """A folder that cannot take (or give back) a run: the message says what is there and what to do."""


def what_is_there(out):
    """A description of the run files in ``out`` ("config.json, metrics.json, 2 checkpoints"), or ""."""
    out = Path(out)
    if not out.is_dir():
        return ""
    found = [name for name in RUN_FILES if (out / name).exists()]
    count = len(checkpoint_folders(out))
    if count:
        found.append(f"{count} checkpoint{'s' if count > 1 else ''}")
    return ", ".join(found)


def prepare_out_folder(out, overwrite=False):
    """Make sure a new run may write into ``out``: a folder (made if missing), writable, holding no
    run unless ``overwrite`` (then the old run's files are removed). Raises RunFolderError."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder")
    held = what_is_there(out)
    if held and not overwrite:
        raise RunFolderError(f"--out {out} already holds a run ({held}); continue it with --resume {out}, "
                             f"or replace it with --overwrite")
    check_writable(out)
    if held:
        remove_run(out)


def check_writable(out):
    """Create ``out`` if needed and write a temporary file in it; raise RunFolderError if either fails."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".minimf-write-test.", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise RunFolderError(f"cannot write into {out}: {err.strerror or err}") from None


def remove_run(out):
    """Remove the run files of ``out`` (RUN_FILES and the checkpoints), nothing else."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)


def checkpoint_folders(out):
    """The complete checkpoint folders of ``out``, oldest first (their names sort in time order;
    temporary folders of an interrupted write start with a dot and are left out)."""
    folder = Path(out) / CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("epoch-"))


def write_checkpoint(out, epoch, step, arrays, info):
    """Save a checkpoint at ``step`` steps into ``epoch``; then remove all but the newest KEEP, and
    what killed writes left behind."""
    save_checkpoint(Path(out) / CHECKPOINTS / f"epoch-{epoch:04d}-step-{step:06d}", arrays, info)
    for old in checkpoint_folders(out)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    remove_leftovers(out)


def remove_leftovers(out):
    """Delete the temporary files and folders of writes that were killed half-way (minimf's own
    names only: ``.config.json.*.tmp`` and the like, ``checkpoints/.epoch-*.tmp``)."""
    out = Path(out)
    for name in RUN_FILES:
        for leftover in out.glob(f".{name}.*.tmp"):
            leftover.unlink(missing_ok=True)
    for leftover in (out / CHECKPOINTS).glob(".epoch-*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


def latest_checkpoint(out):
    """(arrays, info, folder) of the newest checkpoint of ``out`` that verifies, or None if there is
    none. A damaged one is reported on stderr and the one before is tried; if every one is damaged,
    RunFolderError lists what is wrong with each."""
    problems = []
    for folder in reversed(checkpoint_folders(out)):
        try:
            arrays, info = load_checkpoint(folder)
        except CheckpointError as err:
            problems.append(str(err))
            print(f"warning: checkpoint refused: {err}", file=sys.stderr)
            continue
        if problems:
            print(f"note: resuming from the checkpoint before it, {folder.name}", file=sys.stderr)
        return arrays, info, folder
    if problems:
        raise RunFolderError(f"no usable checkpoint in {Path(out) / CHECKPOINTS}: " + "; ".join(problems))
    return None


# --- resuming: the recorded arguments, and what may change -----------------------------------------

MAY_CHANGE = ("resume", "epochs", "no_progress", "checkpoint_every", "data_dir")   # change no number


def given_options(fresh_parser, argv):
    """{dest: value} of the options ``argv`` gives explicitly (defaults left out). ``fresh_parser``
    is changed (every default suppressed): pass one made for this call."""
    for action in fresh_parser._actions:
        action.default = argparse.SUPPRESS
    return vars(fresh_parser.parse_args(argv))


def recorded_arguments(folder):
    """The arguments the run in ``folder`` was started with (config.json's ``argv``)."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"--resume {folder}: no run there (no config.json)") from None
    except ValueError as err:
        raise RunFolderError(f"--resume {folder}: config.json is damaged ({err})") from None
    if "argv" not in config:
        raise RunFolderError(f"--resume {folder}: config.json does not record the run's arguments "
                             "(written by an older minimf); start a new run")
    return config["argv"], config["settings"]


def contradictions(given, settings):
    """Options given now whose values differ from the recorded run's (those of MAY_CHANGE aside)."""
    found = []
    for dest, value in given.items():
        now = [_as_recorded(v) for v in value] if isinstance(value, list) else _as_recorded(value)
        if dest not in MAY_CHANGE and now != settings.get(dest):
            found.append(f"--{dest.replace('_', '-')} {_words(now)} (recorded: {_words(settings.get(dest))})")
    return found


def _as_recorded(value):
    return str(value) if isinstance(value, Path) else value     # config.json stores paths as text


def _words(value):
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)
