"""A run's folder (``python -m minimf.train --out DIR``): what is in it, its checkpoints, and the rule
that a run touches only the files it wrote.

    DIR/config.json      the run's configuration and its identity (``run_id``)
    DIR/metrics.json     one record per finished epoch
    DIR/model.npz        the parameters after the last finished epoch (``minimf.checkpoint.load``)
    DIR/losses.json      every step's loss, and curve.png, its picture (minimf/training/curves.py)
    DIR/checkpoints/epoch-0003-step-000040/   a whole training state (minimf/checkpoint.py): here
                         40 steps into epoch 3; "step-000000" is the start of an epoch, i.e. the
                         end of the one before. The newest two of the run are kept, so that a
                         damaged newest one falls back to the one before.
    DIR/.minimf.lock     held (``fcntl.flock``) by the run that uses the folder, with its process id

What a run may remove, and nothing else: its own checkpoints (folders named as above holding only
``manifest.json`` and ``state.npz``, whose manifest names this run), and the temporary files of its
own writes that a kill left behind (their names carry the run's identity). ``--overwrite`` moves the
old run's files into ``DIR/.minimf-replaced-<time>/`` and deletes them only once the new run has
finished its first epoch; if the new run stops before that, they are moved back. A second run or
resume into a folder in use is refused, naming the process that holds it; the lock of a killed run
is released by the operating system with the process, so the next run takes it over.
"""
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from minimf.checkpoint import MANIFEST_FILE, STATE_FILE, CheckpointError, load_checkpoint, save_checkpoint

RUN_FILES = ("config.json", "metrics.json", "model.npz", "losses.json", "curve.png")
CHECKPOINTS = "checkpoints"
LOCK = ".minimf.lock"
SET_ASIDE = ".minimf-replaced-"
KEEP = 2   # checkpoints kept: the newest, and the one before in case the newest is damaged
CHECKPOINT_NAME = re.compile(r"epoch-(\d{4,})-step-(\d{6,})")


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


# --- one run at a time -------------------------------------------------------------------------------

class RunLock:
    """An exclusive lock on the folder ``out`` for a ``with`` block (``fcntl.flock`` on DIR/.minimf.lock,
    which records the holder's process id). Raises RunFolderError if another process holds it."""

    def __init__(self, out):
        self.path = Path(out) / LOCK
        self.file = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise RunFolderError(f"{self.path.parent} is in use by another run (process {holder}); wait until it "
                                 "stops, or choose another folder") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
        return False


# --- a new run in a folder --------------------------------------------------------------------------

def check_out_folder(out):
    """``out`` can take a run's files: a folder (made if missing) this process can write into.
    Raises RunFolderError."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a folder")
    check_writable(out)


def check_holds_no_run(out, overwrite=False):
    """A new run may use ``out``: it holds no run, or ``overwrite`` says the run there will be set
    aside (``set_aside``). Raises RunFolderError."""
    held = what_is_there(out)
    if held and not overwrite:
        raise RunFolderError(f"--out {out} already holds a run ({held}); continue it with --resume {out}, "
                             f"or replace it with --overwrite")


def check_writable(out):
    """Create ``out`` if needed and write a temporary file in it; raise RunFolderError if either fails."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".minimf-write-test.", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise RunFolderError(f"cannot write into {out}: {err.strerror or err}") from None


def set_aside(out):
    """Move the run files of ``out`` (RUN_FILES and minimf's checkpoints, nothing else) into a new
    folder ``out/.minimf-replaced-<time>``; return it."""
    aside = Path(tempfile.mkdtemp(prefix=f"{SET_ASIDE}{time.strftime('%Y%m%d-%H%M%S')}-", dir=out))
    for name in RUN_FILES:
        if (out / name).exists():
            os.replace(out / name, aside / name)
    old = checkpoint_folders(out)
    if old:
        (aside / CHECKPOINTS).mkdir()
        for folder in old:
            os.replace(folder, aside / CHECKPOINTS / folder.name)
        remove_if_empty(out / CHECKPOINTS)
    return aside


def put_back(out, aside, run_id):
    """The new run stopped before its first epoch: remove what it wrote and move the old run back."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for folder in checkpoint_folders(out, run_id):
        shutil.rmtree(folder)
    for name in RUN_FILES:
        if (aside / name).exists():
            os.replace(aside / name, out / name)
    for folder in sorted((aside / CHECKPOINTS).glob("epoch-*")) if (aside / CHECKPOINTS).is_dir() else []:
        (out / CHECKPOINTS).mkdir(exist_ok=True)
        os.replace(folder, out / CHECKPOINTS / folder.name)
    discard(aside)


def discard(aside):
    """Delete a folder made by ``set_aside`` (the old run, once the new one has finished an epoch)."""
    shutil.rmtree(aside)


def remove_if_empty(folder):
    try:
        folder.rmdir()
    except OSError:
        pass


# --- checkpoints --------------------------------------------------------------------------------------

def checkpoint_folders(out, run_id=None):
    """minimf's checkpoint folders in ``out``, oldest first: named epoch-NNNN-step-NNNNNN (sorted by
    the numbers), holding nothing but manifest.json and state.npz; with ``run_id``, only those
    whose manifest names that run (or names none: checkpoints written before runs had an identity)."""
    folder = Path(out) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = CHECKPOINT_NAME.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink() and is_checkpoint(path):
            if run_id is None or recorded_run_id(path) in (run_id, None):
                found.append(((int(match[1]), int(match[2])), path))
    return [path for _, path in sorted(found)]


def is_checkpoint(path):
    """A folder that holds manifest.json and nothing else but state.npz (what save_checkpoint writes)."""
    names = {p.name for p in path.iterdir()}
    return MANIFEST_FILE in names and names <= {MANIFEST_FILE, STATE_FILE}


def recorded_run_id(path):
    """The run identity a checkpoint's manifest records (None if it records none or cannot be read)."""
    try:
        info = json.loads((path / MANIFEST_FILE).read_text()).get("info", {})
        return info.get("run_id") if isinstance(info, dict) else None
    except (OSError, ValueError, AttributeError):
        return None


def write_checkpoint(out, epoch, step, arrays, info, run_id):
    """Save a checkpoint of run ``run_id`` at ``step`` steps into ``epoch``; then remove all but its
    newest KEEP, and the leftovers of its own killed writes."""
    save_checkpoint(Path(out) / CHECKPOINTS / f"epoch-{epoch:04d}-step-{step:06d}", arrays, info, tag=run_id)
    for old in checkpoint_folders(out, run_id)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    remove_leftovers(out, run_id)


def remove_leftovers(out, run_id):
    """Delete the temporary files and folders that killed writes of run ``run_id`` left half-way:
    their names carry the run's identity (``.config.json.<run_id>.*.tmp``, ``checkpoints/.epoch-*.<run_id>.*.tmp``)."""
    out = Path(out)
    if not run_id:
        return
    for name in RUN_FILES:
        for leftover in out.glob(f".{name}.{run_id}.*.tmp"):
            leftover.unlink(missing_ok=True)
    for leftover in (out / CHECKPOINTS).glob(f".epoch-*.{run_id}.*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


def remove_run(out, run_id):
    """Delete what run ``run_id`` wrote into ``out`` (RUN_FILES, its checkpoints, the leftovers of its
    killed writes), then the checkpoint folder and ``out`` if nothing else is in them."""
    out = Path(out)
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for checkpoint in checkpoint_folders(out, run_id):
        shutil.rmtree(checkpoint, ignore_errors=True)
    remove_leftovers(out, run_id)
    remove_if_empty(out / CHECKPOINTS)
    remove_if_empty(out)


def latest_checkpoint(out, accept=None):
    """(arrays, info, folder) of the newest checkpoint of ``out`` that verifies and that ``accept(info)``
    takes (it returns None, or why not), or None if there is none. A refused one is reported on
    stderr and the one before is tried; if every one is refused, RunFolderError lists why."""
    problems = []
    for folder in reversed(checkpoint_folders(out)):
        try:
            arrays, info = load_checkpoint(folder)
            why_not = accept(info) if accept is not None else None
            if why_not:
                raise CheckpointError(f"{folder}: {why_not}")
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


def set_aside_folders(out):
    """The folders of earlier runs that ``--overwrite`` set aside and that are still there."""
    return sorted(Path(out).glob(f"{SET_ASIDE}*")) if Path(out).is_dir() else []
