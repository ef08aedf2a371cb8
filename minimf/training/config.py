"""A training run's whole configuration as one typed object, validated completely in one place.

    config = RunConfig(algo="bp", hidden=[500, 500], epochs=3, train_subset=5000)
    config = validate(config)          # a copy with the defaults filled in, or ConfigError

Every field is the command-line option of the same name (``epochs`` is ``--epochs``, ``no_bias``
is ``--no-bias``), so the command line, a notebook and an experiment describe a run the same way,
and ``config.json`` records it as it is (``to_dict``). ``validate`` enforces every rule that ties
the options together (the CNN has channels, not hidden widths; the pipeline is for rules whose
layers do not wait for each other; ...) with a message that names the options, and checks that the
backend and, for ``pipeline="ray"``, Ray can be imported. Nothing touches the disk before it has
passed. ``resumed`` compares the configuration a run was recorded with to the options given now.
"""
import dataclasses
import math
import numbers
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from minimf.backend import BACKENDS, BLAS_THREAD_VARS, BackendError, get_backend, strict_cupy_requested
from minimf.datasets import DATASETS, num_classes
from minimf.nn.cnn import block_shapes
from minimf.nn.schedules import SCHEDULES
from minimf.parallel.ray_pipeline import RayPipelineError, import_ray
from minimf.rules.mono_forward import INPUT_NORMS, READOUTS
from minimf.training.registry import (ARCHITECTURES, CREDITS, GLOBAL_CREDIT, NETWORKS, algos_with,
                                      network_class)

# lr, lr_schedule, epochs: chosen for MF and BP on a validation split, never the test set
# (`python -m minimf.experiments tune`; docs/results.md). The other rules were not tuned.
DEFAULT_LR = 1.88e-3
DEFAULT_SCHEDULE = "cosine"
DEFAULT_EPOCHS = 10
DEFAULT_HIDDEN = [1000, 1000]
DEFAULT_CHANNELS = [64, 128, 256, 512]
# arch "mixer": patch size, width D, token and channel MLPs' hidden sizes, depth (blocks)
DEFAULT_MIXER = {"patch": 4, "width": 128, "token_hidden": 64, "channel_hidden": 512, "depth": 4}
MIXER_FIELDS = tuple(DEFAULT_MIXER)
AUGMENTED = ("cifar10", "cifar100")   # augment: crops and mirror images make sense for these
OPTIMIZERS = ("adam", "sgd")
PREDICT = ("bp", "ff")
PIPELINES = ("threads", "ray")
# Options a resumed run may change: they change no number of the run.
MAY_CHANGE = ("epochs", "no_progress", "checkpoint_every", "data_dir")


class ConfigError(ValueError):
    """A configuration that cannot run: the message names the options and says what to do."""


@dataclass
class RunConfig:
    """Every setting of a training run (see ``python -m minimf.train --help`` for each one's meaning).

    ``hidden`` and ``channels`` are None until ``validate`` fills in the default of the architecture
    in use; ``out`` is the run folder (None: nothing written)."""
    algo: str = "mf"
    credit: str = "local"
    backend: str = "numpy"
    device: int | None = None
    dataset: str = "mnist"
    labels: str = "fine"
    data_dir: str | None = None
    arch: str = "mlp"
    hidden: list | None = None
    channels: list | None = None
    patch: int | None = None
    width: int | None = None
    token_hidden: int | None = None
    channel_hidden: int | None = None
    depth: int | None = None
    readout: str = "projection"
    input_norm: str = "none"
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 256
    lr: float = DEFAULT_LR
    optimizer: str = "adam"
    lr_schedule: str = DEFAULT_SCHEDULE
    lr_steps: list | None = None
    no_bias: bool = False
    seed: int = 0
    predict: str = "bp"
    train_subset: int | None = None
    test_subset: int | None = None
    validation: int = 0
    augment: bool = False
    no_normalize: bool = False
    out: Path | None = None
    checkpoint_every: int | None = None
    no_progress: bool = False
    pipeline: str | None = None
    timeline: Path | None = None
    ray_address: str | None = None
    cpus_per_layer: float = 1
    gpus_per_layer: float = 0
    split_units: int | None = None
    split_batch: int | None = None
    micro_batch: int | None = None

    def to_dict(self):
        """The configuration as JSON-ready values (paths as text)."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values):
        """The configuration ``to_dict`` wrote; an unknown field is a ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown setting{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        values = dict(values)
        for name in ("out", "timeline"):
            if values.get(name) is not None:
                values[name] = Path(values[name])
        return cls(**values)

    def changed(self, **changes):
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def option(name):
    """The command-line spelling of a field: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def validate(config):
    """A copy of ``config`` with the architecture's default widths (and, for ``pipeline="ray"`` on
    CuPy, one GPU per layer) filled in, after every check below; ConfigError says what is wrong.
    Prints a note (not an error) when a threaded trainer starts without one BLAS thread."""
    config = config.changed()
    check_types(config)
    info = DATASETS[config.dataset]
    check_dataset(config, info)
    check_architecture(config, info)
    check_credit(config)            # before the checks below, which know only the local rules
    check_input_norm(config)
    if network_class(config.algo, config.arch, config.credit) is None:
        kind = {"mlp": "MLP", "cnn": "convolutional network", "mixer": "MLP-Mixer"}[config.arch]
        others = [a for a in ARCHITECTURES if network_class(config.algo, a, config.credit) is not None]
        raise ConfigError(f"--algo {config.algo} has no {kind} in minimf; use --arch {' or '.join(others)}")
    if config.pipeline and not network_class(config.algo, config.arch, config.credit).PIPELINE:
        raise ConfigError(f"--pipeline is for --algo {', '.join(algos_with('PIPELINE'))} (its layers do not "
                          f"wait for each other), not {config.algo}")
    check_parallel(config)
    check_readout(config, num_classes(config.dataset, config.labels))
    check_schedule(config)
    check_output(config)
    check_backend(config)
    return config


# --- one check per concern --------------------------------------------------------------------------

CHOICES = {"algo": NETWORKS, "credit": CREDITS, "backend": BACKENDS, "dataset": list(DATASETS),
           "labels": ("fine", "coarse"), "arch": ARCHITECTURES, "readout": list(READOUTS),
           "input_norm": INPUT_NORMS, "optimizer": OPTIMIZERS, "lr_schedule": list(SCHEDULES),
           "predict": PREDICT}
POSITIVE_INTS = ("epochs", "batch_size", "train_subset", "test_subset", "checkpoint_every", "split_units",
                 "split_batch", "micro_batch", *MIXER_FIELDS)
INT_LISTS = ("hidden", "channels", "lr_steps")
FLAGS = ("no_bias", "augment", "no_normalize", "no_progress")


def check_types(config):
    """Every field of the type and range its option takes (what the command line's parser checks
    for the command line, checked again for configurations made in Python)."""
    for name, choices in CHOICES.items():
        if getattr(config, name) not in choices:
            raise ConfigError(f"{option(name)}: expected one of {', '.join(map(str, choices))}, "
                              f"got {getattr(config, name)!r}")
    if config.pipeline is not None and config.pipeline not in PIPELINES:
        raise ConfigError(f"--pipeline: expected one of {', '.join(PIPELINES)}, got {config.pipeline!r}")
    for name in POSITIVE_INTS:
        value = getattr(config, name)
        if value is not None and not is_int(value, minimum=1):
            raise ConfigError(f"{option(name)}: expected a positive integer, got {value!r}")
    for name in INT_LISTS:
        value = getattr(config, name)
        if value is not None and (not isinstance(value, (list, tuple)) or not value
                                  or not all(is_int(v, minimum=1) for v in value)):
            raise ConfigError(f"{option(name)}: expected a list of positive integers, got {value!r}")
    for name in FLAGS:
        if not isinstance(getattr(config, name), bool):
            raise ConfigError(f"{option(name)}: expected True or False, got {getattr(config, name)!r}")
    if not is_int(config.seed, minimum=0):
        raise ConfigError(f"--seed: expected an integer of 0 or more, got {config.seed!r}")
    if not is_int(config.validation, minimum=0):
        raise ConfigError(f"--validation: expected an integer of 0 or more, got {config.validation!r}")
    if config.device is not None and not is_int(config.device, minimum=0):
        raise ConfigError(f"--device: expected an integer of 0 or more, got {config.device!r}")
    for name, minimum in (("lr", "positive"), ("cpus_per_layer", "positive"), ("gpus_per_layer", "0 or more")):
        value = getattr(config, name)
        ok = is_number(value) and (value > 0 if minimum == "positive" else value >= 0)
        if not ok:
            raise ConfigError(f"{option(name)}: expected a finite {minimum} number, got {value!r}")


def is_int(value, minimum):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_dataset(config, info):
    """Options that only some data sets accept, and a validation split smaller than the training set."""
    n_train = info.sizes["train"]
    if config.validation >= n_train:
        raise ConfigError(f"--validation must be below {n_train} ({info.name} has {n_train} training examples), "
                          f"got {config.validation}")
    if config.augment and info.name not in AUGMENTED:
        raise ConfigError(f"--augment is for {' and '.join(AUGMENTED)} (crops and mirror images), not {info.name}")
    if config.labels == "coarse" and not info.coarse_classes:
        raise ConfigError(f"--labels coarse is for cifar100; {info.name} has one set of labels")


def check_architecture(config, info):
    """``hidden`` belongs to the MLP, ``channels`` to the CNN and the Mixer's sizes to the Mixer; fill
    in the defaults of the one in use."""
    if config.arch != "mlp" and info.kind != "image":
        raise ConfigError(f"--arch {config.arch} needs images; {info.name} is {info.kind} data (use --arch mlp)")
    given = [option(name) for name in MIXER_FIELDS if getattr(config, name) is not None]
    if config.arch != "mixer":
        if given:
            raise ConfigError(f"{given[0]} is for --arch mixer")
        config.hidden, config.channels = architecture_widths(config.arch, config.hidden, config.channels,
                                                             info.input_shape)
        return
    for name in ("hidden", "channels"):
        if getattr(config, name) is not None:
            raise ConfigError(f"{option(name)} is for --arch {'mlp' if name == 'hidden' else 'cnn'}; the Mixer's "
                              "sizes are set with --patch, --width, --token-hidden, --channel-hidden, --depth")
    for name, default in DEFAULT_MIXER.items():
        if getattr(config, name) is None:
            setattr(config, name, default)
    _, height, width = info.input_shape
    if height % config.patch or width % config.patch:
        raise ConfigError(f"--patch {config.patch}: {config.patch}x{config.patch} patches do not tile {info.name}'s "
                          f"{height}x{width} images; choose a size that divides both")


def architecture_widths(arch, hidden, channels, image_shape):
    """(hidden, channels) with the default of the architecture in use filled in: the MLP takes
    ``hidden`` and no ``channels``, the CNN ``channels`` (whose blocks must fit ``image_shape``)
    and no ``hidden``. ConfigError otherwise."""
    if arch == "mlp":
        if channels is not None:
            raise ConfigError("--channels is for --arch cnn; the MLP's widths are set with --hidden")
        return (list(DEFAULT_HIDDEN) if hidden is None else list(hidden)), None
    if hidden is not None:
        raise ConfigError("--hidden is for --arch mlp; the CNN's widths are set with --channels")
    channels = list(DEFAULT_CHANNELS) if channels is None else list(channels)
    try:
        block_shapes(image_shape, channels)
    except ValueError as err:
        raise ConfigError(f"--channels: {err}") from None
    return None, channels


# Why a global-credit network refuses a trainer (its class sets the flag named here to False)
WHY_NOT_GLOBAL = {"PIPELINE": "every layer waits for the error of all the layers above it, so the layers cannot "
                              "run concurrently",
                  "UNIT_SPLIT": "a unit's error comes down through every unit of the layer above, so the units "
                                "cannot learn apart",
                  "BATCH_SPLIT": "not checked for this network"}


def check_credit(config):
    """Credit "global": only the rules of GLOBAL_CREDIT with the MLP, and only with the trainers
    its network class allows (PIPELINE, UNIT_SPLIT, BATCH_SPLIT)."""
    if config.credit == "local":
        return
    if config.algo not in GLOBAL_CREDIT or config.arch != "mlp":
        raise ConfigError(f"--credit global is for --algo {' or '.join(GLOBAL_CREDIT)} with --arch mlp, not --algo "
                          f"{config.algo} --arch {config.arch}")
    net_class = GLOBAL_CREDIT[config.algo]
    for name, attr in (("pipeline", "PIPELINE"), ("split_units", "UNIT_SPLIT"), ("split_batch", "BATCH_SPLIT")):
        if getattr(config, name) and not getattr(net_class, attr):
            raise ConfigError(f"{option(name)} does not go with --algo {config.algo} --credit global "
                              f"({net_class.__name__}): {WHY_NOT_GLOBAL[attr]}; use --credit local")


def check_input_norm(config):
    """An input norm other than none: MF's MLP with local credit only (the global rule would have to
    differentiate the normalisation; MF's CNN has the channel-group read-out for DeeperForward's)."""
    if config.input_norm == "none":
        return
    cls = network_class(config.algo, config.arch, config.credit)
    if cls is None or "input_norm" not in cls.OPTIONS:
        raise ConfigError(f"--input-norm {config.input_norm} is for --algo mf --arch mlp, not --algo {config.algo} "
                          f"--arch {config.arch}")
    if config.input_norm not in cls.INPUT_NORMS:
        raise ConfigError(f"--input-norm {config.input_norm} does not go with --credit {config.credit}: the summed "
                          "loss would have to be differentiated through the normalisation; use --credit local")


def check_parallel(config):
    """At most one of pipeline, split_units, split_batch, each for the rules and networks it
    supports, on NumPy; micro_batch only with split_batch; the Ray options with the Ray pipeline."""
    chosen = [option(name) for name in ("pipeline", "split_units", "split_batch") if getattr(config, name)]
    if len(chosen) > 1:
        raise ConfigError(f"choose one way to train in parallel, not {' and '.join(chosen)}")
    cls = network_class(config.algo, config.arch, config.credit)
    if config.split_units and not cls.UNIT_SPLIT:
        raise ConfigError(f"--split-units is for --algo {', '.join(algos_with('UNIT_SPLIT'))} --arch mlp (dense "
                          "layers whose units learn from their own loss)")
    if config.split_batch and not cls.BATCH_SPLIT:
        raise ConfigError(f"--split-batch is for --algo {', '.join(algos_with('BATCH_SPLIT'))}, not {config.algo}")
    if (config.split_units or config.split_batch) and config.backend != "numpy":
        raise ConfigError(f"{chosen[0]} shares work out between CPU threads: it needs --backend numpy")
    if config.split_units and config.arch == "mlp" and config.split_units > min(config.hidden):
        raise ConfigError(f"--split-units {config.split_units}: more threads than the {min(config.hidden)} units "
                          "of the narrowest layer; choose at most that many")
    if config.micro_batch and not config.split_batch:
        raise ConfigError("--micro-batch goes with --split-batch")
    check_ray_options(config)
    if config.timeline and not config.pipeline:
        raise ConfigError("--timeline records a pipeline's layers: it goes with --pipeline")
    if chosen and "1" not in (os.environ.get(var) for var in BLAS_THREAD_VARS):
        print(f"note: {chosen[0]} runs threads of its own; start it with OPENBLAS_NUM_THREADS=1, or every "
              "thread's BLAS uses every core and they fight over them (see docs/benchmarks.md)",
              file=sys.stderr)


def check_ray_options(config):
    """ray_address, cpus_per_layer and gpus_per_layer go with the Ray pipeline; Ray must import;
    GPUs are for the cupy backend, which gets one per layer unless told otherwise."""
    ray_options = [option(name) for name, given in (("ray_address", config.ray_address is not None),
                                                    ("cpus_per_layer", config.cpus_per_layer != 1),
                                                    ("gpus_per_layer", config.gpus_per_layer != 0)) if given]
    if config.pipeline != "ray":
        if ray_options:
            raise ConfigError(f"{ray_options[0]} goes with --pipeline ray")
        return
    if config.gpus_per_layer and config.backend != "cupy":
        raise ConfigError("--gpus-per-layer puts the layers on GPUs: it goes with --backend cupy")
    if config.backend == "cupy" and not config.gpus_per_layer and not strict_cupy_requested():
        config.gpus_per_layer = 1
    try:
        import_ray()
    except RayPipelineError as err:
        raise ConfigError(str(err)) from None


def check_readout(config, classes):
    """A read-out other than projection: MF's CNN only, and every block's channels split into C groups."""
    if config.readout == "projection":
        return
    cls = network_class(config.algo, config.arch, config.credit)
    if "readout" not in cls.OPTIONS:
        raise ConfigError(f"--readout {config.readout} is for --algo mf --arch cnn")
    uneven = [c for c in config.channels if c % classes]
    if uneven:
        raise ConfigError(f"--readout {config.readout} splits each block's channels into one group per class: "
                          f"channels must be divisible by {classes}, got {uneven}")


def check_schedule(config):
    """lr_steps goes with the step schedule, and the step schedule needs it."""
    if config.lr_schedule == "step" and not config.lr_steps:
        raise ConfigError("--lr-schedule step needs --lr-steps, the epochs after which the rate is divided by 10")
    if config.lr_steps and config.lr_schedule != "step":
        raise ConfigError(f"--lr-steps is for --lr-schedule step, not {config.lr_schedule}")


def check_output(config):
    """checkpoint_every needs a run folder; the run folder is not a file."""
    if config.checkpoint_every and not config.out:
        raise ConfigError("--checkpoint-every needs --out DIR, where the checkpoints are written")
    if config.out is not None and Path(config.out).exists() and not Path(config.out).is_dir():
        raise ConfigError(f"--out {config.out} is a file, not a folder")
    if config.data_dir is not None and Path(config.data_dir).exists() and not Path(config.data_dir).is_dir():
        raise ConfigError(f"--data-dir {config.data_dir} is a file, not a folder")


def check_backend(config):
    """The backend imports (CuPy and a GPU for "cupy"), and ``device`` goes with it."""
    if config.device is not None and config.backend != "cupy":
        raise ConfigError("--device picks a GPU: it goes with --backend cupy")
    try:
        xp = get_backend(config.backend)
    except BackendError as err:
        raise ConfigError(str(err)) from None
    if config.device is not None:
        count = xp.cuda.runtime.getDeviceCount()
        if config.device >= count:
            raise ConfigError(f"--device {config.device}: this machine has {count} CUDA device"
                              f"{'s' if count != 1 else ''} (numbered from 0)")


# --- resuming ----------------------------------------------------------------------------------------

def resumed(recorded, given, folder):
    """The configuration that continues the run ``recorded`` (a RunConfig) in ``folder``: the options
    of MAY_CHANGE in ``given`` ({field: value}, the options given now) replace the recorded ones;
    any other option given now must equal the recorded value (ConfigError names each that does not)."""
    wrong = [f"{option(name)} {_words(value)} (recorded: {_words(getattr(recorded, name))})"
             for name, value in given.items()
             if name not in MAY_CHANGE and _as_recorded(value) != _as_recorded(getattr(recorded, name))]
    if wrong:
        raise ConfigError(f"--resume {folder}: {', '.join(wrong)} contradicts the recorded run; leave "
                          "it out to resume as recorded (only --epochs may be raised)")
    changes = {name: value for name, value in given.items() if name in MAY_CHANGE}
    return recorded.changed(out=Path(folder), **changes)


def _as_recorded(value):
    if isinstance(value, Path):
        return str(value)
    return list(value) if isinstance(value, tuple) else value


def _words(value):
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
