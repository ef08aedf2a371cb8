"""What every experiment shares: the size settings, one training run, the data
sets present here, mean +- std over seeds, Markdown tables, plots and the output folder.

An experiment is a function ``run(ctx) -> Report``. ``ctx`` (a ``Context``) carries the command-line
settings (seeds, backend, scale, epochs override, progress bar); the ``Report`` holds Markdown
tables, figures and the raw numbers, and ``write_report`` puts them in the output folder:

    results.md     the tables, headed by the exact command, the settings and the wall time
    results.json   the raw numbers, beside the configuration that produced them
    NAME.png       one file per figure (matplotlib, Agg backend; skipped with a note without it)

Every file is written atomically (minimf.files).
"""
import io
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from minimf import __version__
from minimf.backend import get_backend, timing_environment
from minimf.datasets import DATASETS, data_home, num_classes
from minimf.experiments.journal import training_key
from minimf.training import NETWORKS, RunConfig, build_network, data_for, prepare_data, validate
from minimf.training.run import fit_config
from minimf.files import atomic_write_bytes, atomic_write_json
from minimf.progress import progress_bar
from minimf.run_folder import latest_checkpoint

NOT_CHECKED = "paper value not checked"
# Every experiment trains with the paper's optimiser setting (MF v1: Adam 1e-3, a constant rate), not
# the command line's defaults (chosen by `tune`), so that the tables of docs/results.md stay reproducible.
# An experiment's own options (``options``) are applied after these and win.
PAPER_SETTING = {"lr": 1e-3, "lr_schedule": "constant"}


@dataclass(frozen=True)
class Scale:
    """How big the runs are. ``None`` for a subset means the whole split.

    tiny: for the tests (seconds); quick: for a CPU (minutes per experiment); full: the whole data
    sets and the paper's network sizes, for as many epochs as docs/results.md trains (MLP 20, CNN 6).
    """
    name: str
    train_subset: int | None
    test_subset: int | None
    epochs: int            # MLP epochs (layerwise, mlp, convergence)
    cnn_epochs: int
    width: int             # hidden units per MLP layer
    channels: tuple        # CNN blocks
    depths: tuple          # hidden layers for the depth sweeps (memory, convergence)
    tabular_epochs: int
    tabular_hidden: tuple


SCALES = {
    "tiny": Scale("tiny", 512, 256, 1, 1, 32, (4, 8), (1, 2), 2, (16, 16)),
    "quick": Scale("quick", 5000, 2000, 2, 2, 1000, (16, 32, 64, 128), (1, 2, 4), 30, (64, 64)),
    "full": Scale("full", None, None, 20, 6, 1000, (64, 128, 256, 512), (1, 2, 4, 8), 100, (64, 64)),
}


@dataclass
class Context:
    """The settings of one ``python -m minimf.experiments NAME`` call."""
    name: str
    scale: Scale
    seeds: list
    backend: str = "numpy"
    epochs: int | None = None      # --epochs: overrides every experiment's number of epochs
    progress: bool = True
    command: str = ""
    data_dir: str | None = None
    trials: int | None = None      # tune: --trials, random-search trials per rule (None: the scale's)
    rules: list | None = None      # tune: --rules, the rules tuned and compared (None: mf bp)
    journal: object = None         # a journal.Journal keeping finished trainings (the command line's), or None
    jobs: int = 1                  # --jobs: trainings side by side in worker processes (workers.py)

    @property
    def xp(self):
        return get_backend(self.backend)

    def epochs_or(self, default):
        """--epochs if given, else the experiment's default for this scale."""
        return self.epochs if self.epochs is not None else default

    def bar(self, total, desc, unit="run", initial=0):
        """The progress bar over an experiment's runs, or other ``unit``s (on stderr; off with
        --no-progress), ``initial`` of them done already."""
        return progress_bar(total=total, desc=desc, unit=unit, initial=initial, enabled=self.progress)


@dataclass
class Report:
    """What an experiment produced: Markdown ``tables`` (with their titles), ``notes`` (lines of
    text under them), ``figures`` {file stem: function(matplotlib.pyplot) that draws one figure},
    ``raw`` (JSON-ready numbers) and ``settings`` (what the experiment chose at this scale)."""
    title: str
    tables: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


# --- one training run -----------------------------------------------------------------------------

# (dataset, arch, subsets, backend, no_normalize, held_out) -> prepared data: loaded once per process
_DATA = {}


def train_rule(ctx, algo, *, held_out=None, **training):
    """Train ``algo`` (a key of minimf.training.NETWORKS) as ``python -m minimf.train`` would:
    ``run_config(ctx, algo, **training)`` (dataset, arch, hidden, channels, epochs, seed, options).
    ``held_out``: None to train on the training split and score on the test split, or (V, s) for a
    search's trial: trained and scored on ``search_data(ctx, V, s)``. Returns (net, history): history
    is ``fit``'s list of per-epoch records (``test_acc``, ``test_acc_bp``, ``layer_test_acc``,
    ``seconds``, ...)."""
    return _train(ctx, run_config(ctx, algo, **training), held_out)


def train_history(ctx, algo, *, held_out=None, **training):
    """``train_rule(ctx, algo, held_out=held_out, **training)``'s history alone, kept in ``ctx.journal``
    where there is one: a training that finished before (before a resume, or in a worker process:
    workers.py) is read back, not trained again (minimf/experiments/journal.py)."""
    config = run_config(ctx, algo, **training)
    if ctx.journal is None:
        return _train(ctx, config, held_out)[1]
    key = training_key(config, held_out)
    history = ctx.journal.recall(key)
    if history is None:
        history = _train(ctx, config, held_out, checkpoints=ctx.journal.partial(key))[1]
        ctx.journal.keep(key, history)
    return history


def run_config(ctx, algo, *, dataset="mnist", arch="mlp", hidden=None, channels=None, epochs=1, seed=0, options=None):
    """The validated RunConfig of one of an experiment's trainings: PAPER_SETTING, the subsets of
    ``ctx.scale`` and ``options`` (further RunConfig fields, which win)."""
    return validate(RunConfig(algo=algo, dataset=dataset, arch=arch, hidden=hidden, channels=channels,
                              epochs=epochs, seed=seed, backend=ctx.backend, no_progress=True,
                              train_subset=ctx.scale.train_subset, test_subset=ctx.scale.test_subset,
                              data_dir=ctx.data_dir, **{**PAPER_SETTING, **(options or {})}))


def _train(ctx, config, held_out, checkpoints=None):
    """Build and train the network of ``config`` on its data (``experiment_data``); (net, history).
    ``checkpoints``: None, or a run folder (its name the run's identity) where the training writes a
    checkpoint after every epoch and from whose newest checkpoint it continues."""
    data = experiment_data(ctx, config, held_out)
    net = build_network(config, data["train"][0].shape[1:], num_classes(config.dataset))
    if checkpoints is None:
        return net, fit_config(net, data, config)
    run_id = checkpoints.name
    resume = latest_checkpoint(checkpoints, accept=lambda info: None if info.get("run_id") == run_id
                               else f"it belongs to another training ({info.get('run_id')})")
    config = config.changed(out=checkpoints)
    return net, fit_config(net, data, config, config_record={"settings": config.to_dict(), "run_id": run_id},
                           resume=resume)


def experiment_data(ctx, config, held_out=None):
    """The data a training of ``config`` reads, prepared once per process: the data set's splits at
    the scale's subsets (``held_out`` None), or ``search_data`` with ``held_out`` = (V, s)."""
    key = (config.dataset, config.arch, config.train_subset, config.test_subset, ctx.backend, config.no_normalize,
           held_out)
    if key not in _DATA:
        _DATA[key] = (data_for(config, ctx.xp) if held_out is None else
                      search_data(ctx, *held_out, config.dataset, flatten=config.arch == "mlp"))
    return _DATA[key]


def search_data(ctx, validation, seed, dataset="mnist", flatten=True):
    """A search's data, as minimf.training.prepare_data makes them with ``validation`` and ``seed``, with
    the held-out images in the test split's place: {"train": the training split less ``validation``
    images (then --train-subset of the scale), "test": the held-out images, "validation": None}. The
    test images are not in them: a trial cannot read them. ``flatten=False`` keeps images (C, H, W)."""
    data = prepare_data(dataset, ctx.xp, flatten=flatten, validation=validation, seed=seed,
                        train_subset=ctx.scale.train_subset, data_dir=ctx.data_dir, progress=False)
    return {"train": data["train"], "test": data["validation"], "validation": None}


def prepared_data(ctx, dataset="mnist", arch="mlp"):
    """The data of an earlier ``train_rule`` of ``ctx`` (the same backend and the subsets of its
    scale) on this data set and architecture, for extra evaluations."""
    wanted = (dataset, arch, ctx.scale.train_subset, ctx.scale.test_subset, ctx.backend)
    for key, data in _DATA.items():
        if key[:5] == wanted and key[-1] is None:   # not another backend's arrays, scale's subsets or search's
            return data
    raise KeyError(f"no prepared data for {dataset} {arch} on {ctx.backend}: call train_rule first")


def algorithms(arch):
    """The rules minimf can train with this architecture, in the NETWORKS order (so a rule
    added there appears in every table by itself)."""
    column = 0 if arch == "mlp" else 1
    return [algo for algo, classes in NETWORKS.items() if classes[column] is not None]


def accuracies(record):
    """{mode: test accuracy} of one epoch record: every ``test_acc_<mode>`` (MF: bp, ff; FF: all_labels,
    one_pass), or the single ``test_acc`` of rules with one prediction."""
    modes = {k[len("test_acc_"):]: v for k, v in record.items() if k.startswith("test_acc_")}
    return modes or {"": record["test_acc"]}


def method_name(algo, mode=""):
    """Row label: "MF (bp mode)", "FF (one pass mode)", "BP"."""
    return algo.upper() + (f" ({mode.replace('_', ' ')} mode)" if mode else "")


# --- data sets present here ------------------------------------------------------------------------

def image_datasets_present(data_dir=None):
    """MNIST (packaged) and every downloadable image data set whose files are all in the cache.
    Nothing is downloaded: presence is the file with its catalogued size; load() verifies the checksum."""
    present = []
    for name, info in DATASETS.items():
        if info.kind != "image":
            continue
        folder = data_home(data_dir) / name
        if all((folder / f.name).is_file() and (folder / f.name).stat().st_size == f.size for f in info.files):
            present.append(name)
    return present


# --- numbers to text ---------------------------------------------------------------------------------

def mean_std(values):
    """(mean, sample std) of a list; std 0.0 for a single value."""
    values = [float(v) for v in values]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def pm(values, scale=100.0, digits=2):
    """'98.12 ± 0.10' (accuracies in percent by default); just the value for one seed."""
    mean, std = mean_std(values)
    text = f"{scale * mean:.{digits}f}"
    return text + (f" ± {scale * std:.{digits}f}" if len(values) > 1 else "")


def markdown_table(header, rows):
    """A Markdown table from a header list and a list of row lists (cells are str()-ed)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


# --- the output folder ---------------------------------------------------------------------------

def describe(ctx, report, seconds):
    """The configuration written beside the numbers."""
    return {
        "experiment": ctx.name, "command": ctx.command, "scale": asdict(ctx.scale), "seeds": ctx.seeds,
        "backend": ctx.backend, "epochs_override": ctx.epochs, "settings": report.settings,
        "wall_seconds": round(seconds, 1), "minimf_version": __version__, "python": platform.python_version(),
        "numpy": np.__version__, "platform": platform.platform(), "cpus": os.cpu_count(),
        "timing_env": timing_environment(),
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def write_report(ctx, report, out, seconds):
    """results.md, results.json and one PNG per figure into ``out``; returns the paths written."""
    out = Path(out)
    config = describe(ctx, report, seconds)
    written = [out / "results.json"]
    atomic_write_json(written[0], {"config": config, "results": report.raw})
    pngs, note = write_figures(report.figures, out)
    written += pngs
    md = [f"## {report.title}", "",
          f"`{ctx.command}`: scale {ctx.scale.name}, seeds {' '.join(map(str, ctx.seeds))}, backend "
          f"{ctx.backend}, wall time {seconds / 60:.1f} min ({config['finished']})"
          + "".join(f", {k}={v}" for k, v in config["timing_env"].items()) + ".", ""]
    if report.settings:
        md += ["Settings: " + "; ".join(f"{k} {v}" for k, v in report.settings.items()) + ".", ""]
    for title, table in report.tables:
        md += [f"**{title}**", "", table, ""]
    md += [line for line in report.notes] + ([""] if report.notes else [])
    if pngs:
        md += ["Figures: " + ", ".join(f"[{p.name}]({p.name})" for p in pngs), ""]
    if note:
        md += [note, ""]
    atomic_write_bytes(out / "results.md", "\n".join(md).encode())
    return [out / "results.md"] + written


def write_figures(figures, out):
    """Draw each figure with matplotlib's Agg backend into ``out/STEM.png`` (atomically).
    Returns (paths, note): without matplotlib no figure and a note that says how to get it."""
    if not figures:
        return [], ""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], 'No figures: matplotlib is not installed (pip install -e ".[experiments]").'
    paths = []
    for stem, draw in figures.items():
        fig = plt.figure(figsize=(6, 4))
        draw(fig.add_subplot(1, 1, 1))
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        plt.close(fig)
        atomic_write_bytes(out / f"{stem}.png", buffer.getvalue())
        paths.append(out / f"{stem}.png")
    return paths, ""
