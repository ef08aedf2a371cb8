"""One whole training run from a RunConfig: what ``python -m minimf.train`` does after parsing.

    from minimf.training import RunConfig, train_run
    net, history = train_run(RunConfig(algo="bp", epochs=2, train_subset=5000, out=Path("runs/bp")))

In order: the configuration is validated completely (``validate``); only then is the run folder
prepared (a folder that holds a run is refused unless ``overwrite``); the data set is loaded and
checked once; the network is built; ``config.json`` records the configuration; ``fit`` trains, with
the trainer the configuration names. ``resume=True`` continues the run in ``config.out`` from its
latest checkpoint (``resumed_config`` gives the configuration it was recorded with).
"""
import json
import math
import platform
from pathlib import Path

import numpy as np

from minimf import __version__
from minimf.backend import STRICT_CUPY_VAR, get_backend, say_once, strict_cupy_requested, timing_environment
from minimf.datasets import DATASETS, DatasetError, num_classes
from minimf.files import atomic_write_json
from minimf.nn.schedules import make_schedule
from minimf.parallel.timeline import Timeline
from minimf.run_folder import RunFolderError, latest_checkpoint, prepare_out_folder
from minimf.training.config import ConfigError, RunConfig, validate
from minimf.training.data import data_for
from minimf.training.loop import fit
from minimf.training.registry import build_network
from minimf.training.records import format_record
from minimf.training.trainers import make_trainer

CLI_ONLY = ("resume", "overwrite")   # command-line actions recorded by older versions beside the settings


def train_run(config, *, resume=False, overwrite=False, argv=None, log=print, on_epoch=None):
    """Validate ``config``, prepare its folder, load the data, build the network and train it.
    Returns (net, history). ``argv``: the command line, recorded in config.json where given.
    ``log``: where the run's lines go (the header and one line per epoch); ``on_epoch``: called
    with every epoch's record besides. Raises ConfigError before anything is written."""
    config = validate(config)
    if config.out is not None and not resume:
        try:
            prepare_out_folder(config.out, overwrite)
        except RunFolderError as err:
            raise ConfigError(str(err)) from None
    xp = choose_device(config)
    data = load_data(config, xp)
    classes = num_classes(config.dataset, config.labels)
    net = build_network(config, data["train"][0].shape[1:], classes)
    checkpoint = latest_checkpoint(config.out) if resume else None
    if checkpoint is not None and len(checkpoint[1]["history"]) > config.epochs:
        raise ConfigError(f"--epochs {config.epochs}: the run in {config.out} has already finished "
                          f"{len(checkpoint[1]['history'])} epochs")
    record = describe_run(config, net, data, argv)
    if config.out:
        atomic_write_json(config.out / "config.json", record)
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

    history = fit_config(net, data, config, timeline=timeline, on_epoch=after_epoch, config_record=record,
                         resume=checkpoint)
    return net, history


def fit_config(net, data, config, *, timeline=None, on_epoch=None, config_record=None, resume=None):
    """``fit`` with every setting a (validated) RunConfig gives: its epochs, batches, seed, schedule,
    augmentation, trainer, prediction mode, progress bar and run folder. Returns the history."""
    steps_per_epoch = math.ceil(len(data["train"][1]) / config.batch_size)
    schedule = make_schedule(config.lr_schedule, config.lr, steps_per_epoch, config.epochs, config.lr_steps)
    augment = DATASETS[config.dataset].input_shape if config.augment else None
    return fit(net, data, epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
               schedule=schedule, augment=augment, trainer=make_trainer(net, config, timeline),
               predict=config.predict, progress=not config.no_progress, on_epoch=on_epoch, out=config.out,
               checkpoint_every=config.checkpoint_every, config=config_record, resume=resume)


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
        raise DatasetError(f"out of memory copying the data set to {where} ({err}); try --train-subset N") from None


def headline(config, net, data):
    """The run's first line: rule, data, network, backend, examples, epochs."""
    info = DATASETS[config.dataset]
    shape = "x".join(map(str, info.input_shape))
    layers = f"sizes {net.sizes}" if config.arch == "mlp" else f"CNN channels {net.channels} on {shape}"
    credit = " (global credit)" if config.credit == "global" else ""
    return (f"minimf {__version__}: {config.algo.upper()}{credit} on {info.title}, {layers} -> {net.num_classes} "
            f"classes, {config.backend}, {len(data['train'][1])} training examples, {config.epochs} epochs")


def describe_run(config, net, data, argv=None):
    """Everything needed to repeat the run, for config.json: ``settings`` is the configuration
    (``RunConfig.to_dict``), which ``--resume`` reads back."""
    return {
        "minimf_version": __version__,
        "command": None if argv is None else " ".join(["python -m minimf.train", *argv]),
        "argv": None if argv is None else list(argv),
        "settings": config.to_dict(),
        "dataset": config.dataset,
        "num_classes": net.num_classes,
        **({"sizes": net.sizes} if config.arch == "mlp" else
           {"input_shape": list(net.input_shape), "channels": net.channels,
            "block_shapes": [list(shape) for shape in net.shapes[1:]]}),
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


def resumed_config(folder):
    """The RunConfig recorded in ``folder``/config.json (by this version or an older one, whose
    ``settings`` also held the command-line actions ``resume`` and ``overwrite``)."""
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
    settings = {k: v for k, v in record["settings"].items() if k not in CLI_ONLY}
    try:
        return RunConfig.from_dict(settings)
    except (ConfigError, TypeError) as err:
        raise RunFolderError(f"--resume {folder}: config.json's settings cannot be read ({err})") from None
