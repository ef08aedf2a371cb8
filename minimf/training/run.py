"""One whole training run from a RunConfig: what ``python -m minimf.train`` does after parsing.

    from minimf.training import RunConfig, train_run
    net, history = train_run(RunConfig(algo="bp", epochs=2, train_subset=5000, out=Path("runs/bp")))

In order: the configuration is validated completely (``validate``); only then is the run folder
prepared (a folder that holds a run is refused unless ``overwrite``); the data set is loaded and
checked once; the network is built; ``config.json`` records the configuration; ``fit`` trains, with
the trainer the configuration names. ``resume=True`` continues the run in ``config.out`` from its
latest checkpoint (``resumed_config`` gives the configuration it was recorded with).
"""
import contextlib
import json
import math
import platform
import uuid
from pathlib import Path

import numpy as np

from minimf import __version__
from minimf.backend import STRICT_CUPY_VAR, get_backend, say_once, strict_cupy_requested, timing_environment
from minimf.datasets import DATASETS, DatasetError, num_classes
from minimf.files import atomic_write_json
from minimf.nn.schedules import make_schedule
from minimf.parallel.timeline import Timeline
from minimf.run_folder import (RunFolderError, RunLock, check_holds_no_run, check_out_folder, discard,
                               latest_checkpoint, put_back, set_aside, set_aside_folders, what_is_there)
from minimf.training.config import MAY_CHANGE, ConfigError, RunConfig, check_types, is_int, option, validate
from minimf.training.data import data_for
from minimf.training.loop import Interrupted, fit
from minimf.training.registry import build_network
from minimf.training.records import format_record
from minimf.training.trainers import make_trainer

CLI_ONLY = ("resume", "overwrite")   # command-line actions recorded by older versions beside the settings


def train_run(config, *, resume=False, overwrite=False, argv=None, log=print, on_epoch=None):
    """Validate ``config``, lock and prepare its folder, load the data, build the network and train it.
    Returns (net, history). ``argv``: the command line, recorded in config.json where given.
    ``log``: where the run's lines go (the header and one line per epoch); ``on_epoch``: called
    with every epoch's record besides. Raises ConfigError before anything is written; RunFolderError
    when the folder is in use, or a resume finds nothing to continue from."""
    config = validate(config)
    if config.out and not resume:
        as_usage_error(check_out_folder, config.out)
    with RunLock(config.out) if config.out else contextlib.nullcontext():
        if config.out and not resume:
            as_usage_error(check_holds_no_run, config.out, overwrite)
        xp = choose_device(config)
        data = load_data(config, xp)
        net = build(config, data)
        run_id = recorded_record(config.out).get("run_id") if resume else None
        run_id = run_id or uuid.uuid4().hex
        checkpoint = resume_point(config, run_id, log) if resume else None
        aside = set_aside(config.out) if config.out and not resume and what_is_there(config.out) else None
        record = describe_run(config, net, data, argv, run_id)
        try:
            history = train_recorded(net, data, config, record, checkpoint, aside, log, on_epoch)
        except BaseException as err:
            if aside is not None and aside.exists():   # stopped before its first epoch: the old run comes back
                put_back(config.out, aside, run_id)
                if isinstance(err, Interrupted):
                    err.old_run_back = True
            raise
    return net, history


def train_recorded(net, data, config, record, checkpoint, aside, log, on_epoch):
    """Write config.json, say what runs, and train; the set-aside old run (``aside``) is deleted once
    the first epoch's files are written."""
    if config.out:
        atomic_write_json(config.out / "config.json", record, tag=record["run_id"])
    log(headline(config, net, data))
    if checkpoint is not None:
        log(f"resuming from {checkpoint[2]}")
    timeline = Timeline(len(net.layers)) if config.timeline else None

    def after_epoch(r):
        log(format_record(r, config.epochs))
        if timeline is not None:
            timeline.save(config.timeline)
        if on_epoch is not None:
            on_epoch(r)

    def after_files(history):          # model.npz and metrics.json of an epoch are on disk
        if aside is not None and aside.exists():
            discard(aside)

    return fit_config(net, data, config, timeline=timeline, on_epoch=after_epoch, config_record=record,
                      resume=checkpoint, after_files=after_files)


def as_usage_error(check, *args):
    """Run a folder check of minimf/run_folder.py; its refusal is a ConfigError (nothing was written)."""
    try:
        check(*args)
    except RunFolderError as err:
        raise ConfigError(str(err)) from None


def build(config, data):
    """The configuration's network for the data's examples; one too large for memory is a ConfigError."""
    try:
        return build_network(config, data["train"][0].shape[1:], num_classes(config.dataset, config.labels))
    except MemoryError as err:
        sizes = {"mlp": f"--hidden {' '.join(map(str, config.hidden or []))}",
                 "cnn": f"--channels {' '.join(map(str, config.channels or []))}",
                 "mixer": f"--width {config.width} --depth {config.depth}"}[config.arch]
        raise ConfigError(f"out of memory building the network ({sizes}: {err}); choose smaller layers") from None


def resume_point(config, run_id, log):
    """The checkpoint a resume continues from: the newest of this run (``run_id``) and configuration
    that verifies. With no checkpoint at all, a run that never finished an epoch starts again from
    its beginning; a folder that holds finished epochs is a RunFolderError (never a fresh start over them)."""
    checkpoint = latest_checkpoint(config.out, accept=lambda info: refusal(info, config, run_id))
    if checkpoint is None:
        finished = [name for name in ("metrics.json", "model.npz") if (config.out / name).exists()]
        if finished:
            aside = set_aside_folders(config.out)
            raise RunFolderError(f"--resume {config.out}: no checkpoint to continue from, but the folder holds "
                                 f"{' and '.join(finished)}; nothing was changed" +
                                 (f" (the run an --overwrite replaced is in {aside[-1]})" if aside else ""))
        log(f"note: {config.out} has no checkpoint yet: the run starts again from its beginning")
    elif len(checkpoint[1]["history"]) > config.epochs:
        raise ConfigError(f"--epochs {config.epochs}: the run in {config.out} has already finished "
                          f"{len(checkpoint[1]['history'])} epochs")
    return checkpoint


COMPARED_LATER = ("out",)   # settings a checkpoint need not share: the folder may have moved


def refusal(info, config, run_id):
    """Why a (verified) checkpoint cannot continue this run, or None: it must hold a training state
    with sane progress, belong to this run (``run_id``; checkpoints written before runs had an
    identity have none) and record this configuration, the options of MAY_CHANGE aside."""
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        return "its manifest holds no run's training state"
    epoch, step, history = info.get("epoch"), info.get("step"), info.get("history")
    if not (is_int(epoch, 1) and is_int(step, 0) and isinstance(history, list) and len(history) == epoch - 1):
        return f"its progress is not sane (epoch {epoch!r}, step {step!r}, {type(history).__name__} of records)"
    if info.get("run_id") not in (None, run_id):
        return f"it belongs to another run ({info['run_id']}), not to the one in this folder ({run_id})"
    recorded = info["config"].get("settings")
    if not isinstance(recorded, dict):
        return "it records no settings"
    now = config.to_dict()
    ignored = set(MAY_CHANGE) | set(COMPARED_LATER) | set(CLI_ONLY)
    differ = sorted(k for k in set(now) | set(recorded) if k not in ignored and recorded.get(k) != now.get(k))
    if differ:
        return ("it was written with other settings: " +
                ", ".join(f"{option(k)} {recorded.get(k)!r} (now {now.get(k)!r})" for k in differ))
    return None


def fit_config(net, data, config, *, timeline=None, on_epoch=None, config_record=None, resume=None,
               after_files=None):
    """``fit`` with every setting a (validated) RunConfig gives: its epochs, batches, seed, schedule,
    augmentation, trainer, prediction mode, progress bar and run folder. Returns the history."""
    steps_per_epoch = math.ceil(len(data["train"][1]) / config.batch_size)
    schedule = make_schedule(config.lr_schedule, config.lr, steps_per_epoch, config.epochs, config.lr_steps)
    augment = DATASETS[config.dataset].input_shape if config.augment else None
    return fit(net, data, epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
               schedule=schedule, augment=augment, trainer=make_trainer(net, config, timeline),
               predict=config.predict, progress=not config.no_progress, on_epoch=on_epoch, out=config.out,
               checkpoint_every=config.checkpoint_every, config=config_record, resume=resume,
               run_id=None if config_record is None else config_record["run_id"], after_files=after_files)


def choose_device(config):
    """The array module of the (validated) configuration, on its GPU where ``device`` names one."""
    if config.backend == "numpy" and strict_cupy_requested():
        say_once(f"note: {STRICT_CUPY_VAR}=1 is ignored with --backend numpy (it stands in for CuPy only)")
    xp = get_backend(config.backend)
    if config.device is not None:
        xp.cuda.Device(config.device).use()
    return xp


def load_data(config, xp):
    """``data_for(config, xp)``; running out of memory there is a DatasetError that says what to try."""
    try:
        return data_for(config, xp)
    except MemoryError as err:   # the data set itself does not fit (on the GPU: CuPy's OutOfMemoryError)
        where = "the GPU" if config.backend == "cupy" else "memory"
        raise DatasetError(f"out of memory reading the data set into {where} ({err}): a data file larger than it "
                           "should be (damaged?), or a data set too large here (try --train-subset N)") from None


def headline(config, net, data):
    """The run's first line: rule, data, network, backend, examples, epochs."""
    info = DATASETS[config.dataset]
    shape = "x".join(map(str, info.input_shape))
    layers = {"mlp": lambda: f"sizes {net.sizes}", "cnn": lambda: f"CNN channels {net.channels} on {shape}",
              "mixer": lambda: (f"Mixer of {net.depth} blocks, width {net.width}, {net.patch}x{net.patch} patches "
                                f"on {shape}")}[config.arch]()
    credit = " (global credit)" if config.credit == "global" else ""
    return (f"minimf {__version__}: {config.algo.upper()}{credit} on {info.title}, {layers} -> {net.num_classes} "
            f"classes, {config.backend}, {len(data['train'][1])} training examples, {config.epochs} epochs")


def describe_run(config, net, data, argv=None, run_id=None):
    """Everything needed to repeat the run, for config.json: ``settings`` is the configuration
    (``RunConfig.to_dict``), which ``--resume`` reads back; ``run_id`` the run's identity, which its
    checkpoints record too."""
    return {
        "minimf_version": __version__,
        "run_id": run_id,
        "command": None if argv is None else " ".join(["python -m minimf.train", *argv]),
        "argv": None if argv is None else list(argv),
        "settings": config.to_dict(),
        "dataset": config.dataset,
        "num_classes": net.num_classes,
        **architecture_record(config, net),
        "num_parameters": net.num_parameters(),
        "train_examples": int(len(data["train"][1])),
        "test_examples": int(len(data["test"][1])),
        "validation_examples": int(len(data["validation"][1])) if data["validation"] else 0,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "timing_env": timing_environment(),
        "array_module": net.xp.__name__,     # "minimf.testing.strict_cupy" for the CPU stand-in
        **({"device": net.xp.cuda.Device().id} if config.backend == "cupy" else {}),
    }


def recorded_record(folder):
    """What config.json in ``folder`` holds (a dict with ``settings``); RunFolderError if it cannot be read."""
    path = Path(folder) / "config.json"
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"--resume {folder}: no run there (no config.json)") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise RunFolderError(f"--resume {folder}: config.json is damaged ({err})") from None
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        raise RunFolderError(f"--resume {folder}: config.json does not record the run's settings "
                             "(written by an older minimf, or edited); start a new run")
    if record.get("run_id") is not None and not (isinstance(record["run_id"], str) and record["run_id"].isalnum()):
        raise RunFolderError(f"--resume {folder}: config.json's run_id {record['run_id']!r} is not a run identity")
    return record


def architecture_record(config, net):
    """The network's sizes for config.json."""
    if config.arch == "mlp":
        return {"sizes": net.sizes}
    if config.arch == "cnn":
        return {"input_shape": list(net.input_shape), "channels": net.channels,
                "block_shapes": [list(shape) for shape in net.shapes[1:]]}
    return {"input_shape": list(net.input_shape), "patches": net.patches,
            **{name: getattr(net, name) for name in ("patch", "width", "token_hidden", "channel_hidden", "depth")}}


def resumed_config(folder):
    """The RunConfig recorded in ``folder``/config.json (by this version or an older one, whose
    ``settings`` also held the command-line actions ``resume`` and ``overwrite``), each field of its
    option's type; RunFolderError otherwise."""
    record = recorded_record(folder)
    settings = {k: v for k, v in record["settings"].items() if k not in CLI_ONLY}
    try:
        config = RunConfig.from_dict(settings)
        check_types(config)         # a hand edit; the rules between options are train_run's validate
        return config
    except (ConfigError, TypeError) as err:
        raise RunFolderError(f"--resume {folder}: config.json's settings are not a run's ({err})") from None
