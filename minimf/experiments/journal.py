"""The finished trainings of an experiment, kept in its output folder as they finish, so that an
experiment stopped part-way (a scheduler's SIGTERM, Ctrl-C, a machine that goes away) continues
where it stopped instead of starting again: ``python -m minimf.experiments NAME --resume DIR``.

A full-scale experiment is dozens of trainings and many hours on a CPU (the Mixer comparison's
search and final runs); losing all of them to one signal is not acceptable.

    DIR/experiment.json      the experiment's settings (name, scale, seeds, backend, ...), which a
                             resume takes over and which the options given with --resume must repeat
    DIR/runs/<digest>.json   one finished training: {"key": what determines it, "history": its
                             per-epoch records, as ``fit`` returned them}
    DIR/partial/<digest>/    a training under way: a run folder (minimf/run_folder.py, with the
                             digest as its run identity) with a checkpoint after every epoch, from
                             which a resume continues it; removed once the training is kept

A training's key is everything that decides its numbers: its whole run configuration (the
validated RunConfig, less what only changes how it is shown or where files go), the data it was
scored on ("the test split", or a search's held-out images), and minimf's version. The file's name
is the sha256 of the key written as canonical JSON, and the file repeats the key, so a file is only
ever used for the training it was written for. The report is computed from the histories alone, so a
resumed experiment writes the same report as one that never stopped (tests/test_experiment_resume.py).

Nothing here removes or overwrites a file it did not write: a damaged file in ``runs/`` stops the
experiment with a message naming it, and a partial folder loses only its own run's files.
"""
import hashlib
import json
from pathlib import Path

from minimf import __version__
from minimf.files import atomic_write_json
from minimf.run_folder import remove_if_empty, remove_run

RUNS = "runs"
PARTIAL = "partial"
SETTINGS_FILE = "experiment.json"
NOT_IN_KEY = ("no_progress", "data_dir", "out", "timeline")   # they change no number a training gives


class JournalError(Exception):
    """A journal file that cannot be used: the message names it and says what to do."""


def training_key(config, held_out=None):
    """What decides a training's numbers: ``config`` (a validated RunConfig) less NOT_IN_KEY, the data
    it trains and is scored on (``held_out``, as common.train_history takes it) and minimf's version.
    JSON-ready."""
    settings = {name: value for name, value in config.to_dict().items() if name not in NOT_IN_KEY}
    return {"config": settings, "data": data_label(held_out), "minimf_version": __version__}


def data_label(held_out):
    """The data of a training in words: the test split, or a search's held-out images (V, seed)."""
    if held_out is None:
        return "test split"
    validation, seed = held_out
    return f"search split: {validation} training images held out, drawn with seed {seed}"


def digest(key):
    """sha256 of ``key`` as canonical JSON (sorted keys, no spaces): the name of its file."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Journal:
    """The finished trainings in ``folder/runs``: ``recall(key)`` gives back a kept history (or None),
    ``keep(key, history)`` writes one atomically as soon as its training has finished."""

    def __init__(self, folder):
        self.folder = Path(folder) / RUNS

    def path(self, key):
        return self.folder / f"{digest(key)}.json"

    def recall(self, key):
        """The history kept for ``key``, or None if this training has not finished before."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            kept = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise JournalError(f"{path} cannot be read ({err}); move it away to train that run again") from None
        if not isinstance(kept, dict) or kept.get("key") != key or not isinstance(kept.get("history"), list):
            raise JournalError(f"{path} is not the record of the training it is named after; move it away to "
                               "train that run again")
        return kept["history"]

    def keep(self, key, history):
        """Write ``history`` (a list of JSON-ready epoch records) for ``key``, atomically; then its
        training's partial folder goes."""
        atomic_write_json(self.path(key), {"key": key, "history": history})
        remove_run(self.partial(key), digest(key))
        remove_if_empty(self.folder.parent / PARTIAL)

    def partial(self, key):
        """The run folder of the training of ``key`` while it is under way (its run identity: the
        folder's name, the key's digest)."""
        return self.folder.parent / PARTIAL / digest(key)

    def count(self):
        """How many finished trainings are kept."""
        return len(list(self.folder.glob("*.json"))) if self.folder.is_dir() else 0

    def epochs_done(self, key, epochs):
        """How many of its ``epochs`` the training of ``key`` has finished: all once it is kept, else
        as many as its partial folder's metrics.json records (0 before its first epoch ends)."""
        if self.path(key).exists():
            return epochs
        try:
            return len(json.loads((self.partial(key) / "metrics.json").read_text()))
        except (OSError, ValueError, TypeError):      # not written yet, or kept and removed meanwhile
            return epochs if self.path(key).exists() else 0
