"""The command line: train Mono-Forward (or a rule it is compared with) on MNIST or another data set.

    python -m minimf.train                              # MF on MNIST, 2x1000 ReLU, Adam 1e-3, batch 256
    python -m minimf.train --algo bp --epochs 20
    python -m minimf.train --algo ff                    # also fa (Feedback Alignment), dfa (Direct FA), pepita
    python -m minimf.train --arch cnn --channels 16 32 64 128   # conv blocks, images (N, 1, 28, 28)
    python -m minimf.train --dataset cifar10 --arch cnn --augment   # downloads CIFAR-10 on first use
    python -m minimf.train --dataset breast-cancer --hidden 64 64   # tabular data: MLP only
    python -m minimf.train --backend cupy --out runs/mf
    python -m minimf.train --train-subset 5000 --epochs 2   # a quick run
    python -m minimf.train --pipeline                   # MF's layers concurrently; the same numbers
    OPENBLAS_NUM_THREADS=1 python -m minimf.train --split-units 2      # each MF layer's units over 2 threads
    OPENBLAS_NUM_THREADS=1 python -m minimf.train --algo bp --arch cnn --split-batch 2 --micro-batch 16

On ``--backend cupy`` a training step makes no host synchronisation: the data set's values are
checked once when it is prepared, the losses stay on the GPU and are read once per epoch (a NaN or
infinite loss still stops the run, naming its epoch, step and layer, before that epoch's files are
written), and the evaluation counts correct predictions on the GPU. ``--device N`` picks the GPU.

After every epoch one line reports the training loss, the test accuracy (for MF and FF in both
prediction modes and for every layer on its own) and the epoch's seconds. With ``--out DIR`` the
run writes ``config.json`` (every setting), ``metrics.json`` (one record per epoch) and
``model.npz`` (the parameters), each atomically, after every epoch: a crash or a diverging loss
leaves the files of the last finished epoch intact.

A run that stops (a crash, a killed job, Ctrl-C) continues with ``--resume DIR`` and ends exactly as
if it had never stopped (minimf/run_folder.py, minimf/checkpoint.py): a checkpoint of the whole
training state is written after every epoch, and every ``--checkpoint-every N`` steps when asked.
``--out`` never replaces an earlier run unless ``--overwrite`` says so.

    python -m minimf.train --out runs/a --checkpoint-every 100
    python -m minimf.train --resume runs/a                 # continue it; --epochs 20 to train further
"""
import argparse
import contextlib
import math
import os
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minimf import PepitaNet, ScalableForwardForwardCNN, __version__
from minimf.backend import (BACKENDS, BLAS_THREAD_VARS, STRICT_CUPY_VAR, BackendError, get_backend, make_rng,
                            say_once, strict_cupy_requested, timing_environment, to_numpy)
from minimf.rules.backprop import BackpropCNN, BackpropNet
from minimf.checkpoint import CheckpointError, restore_training_state, save, training_state
from minimf.checks import check_features, check_labels
from minimf.nn.cnn import block_shapes
from minimf.datasets import DATASETS, DatasetError, carve_validation, load, normalization, num_classes
from minimf.datasets.augment import augment_batch
from minimf.rules.direct_feedback_alignment import DirectFeedbackAlignmentCNN, DirectFeedbackAlignmentNet
from minimf.rules.feedback_alignment import FeedbackAlignmentCNN, FeedbackAlignmentNet
from minimf.files import atomic_write_json
from minimf.run_folder import (MAY_CHANGE, RunFolderError, contradictions, given_options, latest_checkpoint, prepare_out_folder,
                               recorded_arguments, write_checkpoint)
from minimf.rules.forward_forward import ForwardForwardNet
from minimf.rules.global_credit import ForwardForwardGlobalNet, MonoForwardGlobalNet
from minimf.rules.mono_forward import (INPUT_NORMS, READOUTS, MonoForwardCNN,   # what --input-norm, --readout
                                       MonoForwardNet)                          # choose from
from minimf.parallel.batch_split import train_batch_split
from minimf.parallel.pipeline import train_pipelined
from minimf.parallel.ray_pipeline import RayPipeline, RayPipelineError, WorkerDied, import_ray
from minimf.parallel.timeline import Timeline
from minimf.parallel.unit_split import train_unit_split

# --lr, --lr-schedule, --epochs: chosen for MF and BP on a validation split, never the test set
# (`python -m minimf.experiments tune`, docs/results.md): 98.59 +- 0.03% for MF over 5 seeds, 0.9
# points above the paper's constant 1e-3 for 5 epochs. The other rules were not tuned.
DEFAULT_LR = 1.88e-3
DEFAULT_SCHEDULE = "cosine"
DEFAULT_EPOCHS = 10
DEFAULT_HIDDEN = [1000, 1000]
DEFAULT_CHANNELS = [64, 128, 256, 512]
AUGMENTED = ("cifar10", "cifar100")  # --augment: crops and mirror images make sense for these
# --algo: the network class for --arch mlp and for --arch cnn (None: the rule has no such network here)
NETWORKS = {"mf": (MonoForwardNet, MonoForwardCNN), "bp": (BackpropNet, BackpropCNN),
            "ff": (ForwardForwardNet, None), "fa": (FeedbackAlignmentNet, FeedbackAlignmentCNN),
            "dfa": (DirectFeedbackAlignmentNet, DirectFeedbackAlignmentCNN),
            "pepita": (PepitaNet, None), "sff": (None, ScalableForwardForwardCNN)}
# --credit global: the rule's objective with every layer's loss backpropagated to all layers below
# (minimf/rules/global_credit.py); MLPs only. --credit local (the default) is the rule of NETWORKS.
GLOBAL_CREDIT = {"mf": MonoForwardGlobalNet, "ff": ForwardForwardGlobalNet}
# What each rule does (its losses, its evaluation modes, the trainers it supports) its network class
# says (LOSSES, EVALUATION_MODES, BATCH_SPLIT, PIPELINE, UNIT_SPLIT): a new rule is one module in
# minimf/rules/ and one entry above. MODE_NAMES only words the headline accuracy's mode.
MODE_NAMES = {"bp": "BP mode", "ff": "FF mode", "all_labels": "all labels", "one_pass": "one pass"}


def network_class(args):
    """The network class of --algo, --arch and --credit (None where the rule has no such network)."""
    if args.credit == "global":
        return GLOBAL_CREDIT.get(args.algo) if args.arch == "mlp" else None
    return NETWORKS[args.algo][0 if args.arch == "mlp" else 1]


def algos_with(flag):
    """The --algo names with a network (of either architecture) whose class sets ``flag``."""
    return [algo for algo, classes in NETWORKS.items() if any(c is not None and getattr(c, flag) for c in classes)]


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite."""


def positive_int(text):
    return _positive(text, int)


def positive_float(text):
    return _positive(text, float)


def _positive(text, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def nonnegative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text!r}")
    return value


def nonnegative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text!r}")
    return value


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minimf.train",
                                description="Train Mono-Forward or a rule it is compared with, "
                                            "on MNIST or another data set.")
    p.add_argument("--algo", choices=list(NETWORKS), default="mf",
                   help="learning rule: Mono-Forward, backprop, Forward-Forward (MLP only), Feedback "
                        "Alignment, Direct Feedback Alignment, PEPITA (MLP only), Scalable Forward-Forward "
                        "(CNN only) (default: mf)")
    p.add_argument("--credit", choices=["local", "global"], default="local",
                   help="--algo mf or ff, --arch mlp: where each layer's loss sends its error; local: to its "
                        "own layer only (the rule as published), global: also down through all layers below, "
                        "the sum of the layers' losses backpropagated (minimf/rules/global_credit.py) "
                        "(default: local)")
    p.add_argument("--backend", choices=BACKENDS, default="numpy", help="array library (default: numpy)")
    p.add_argument("--device", type=nonnegative_int, default=None, metavar="N",
                   help="--backend cupy: the number of the GPU to train on (default: CuPy's current device, 0)")
    p.add_argument("--dataset", choices=list(DATASETS), default="mnist",
                   help="mnist is packaged; fashion-mnist, cifar10 and cifar100 are downloaded on first use "
                        "into $MINIMF_DATA (or ~/.cache/minimf); breast-cancer and digits need scikit-learn "
                        "(default: mnist)")
    p.add_argument("--labels", choices=["fine", "coarse"], default="fine",
                   help="cifar100: the 100 fine classes or the 20 coarse superclasses (default: fine)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where downloaded data sets live (default: $MINIMF_DATA, else ~/.cache/minimf)")
    p.add_argument("--arch", choices=["mlp", "cnn"], default="mlp",
                   help="dense layers on flattened inputs (N, D), or conv blocks (3x3 conv, ReLU, 2x2 "
                        "average pool) on images (N, C, H, W) (default: mlp)")
    p.add_argument("--hidden", type=positive_int, nargs="+", default=None, metavar="H",
                   help=f"--arch mlp: hidden layer widths (default: {' '.join(map(str, DEFAULT_HIDDEN))})")
    p.add_argument("--channels", type=positive_int, nargs="+", default=None, metavar="F",
                   help=f"--arch cnn: channels of each conv block; every block halves the image "
                        f"(default: {' '.join(map(str, DEFAULT_CHANNELS))}, the paper's)")
    p.add_argument("--readout", choices=list(READOUTS), default="projection",
                   help="--algo mf --arch cnn: each block's goodness read-out, a projection M of the "
                        "flattened block (MF v1) or DeeperForward's channel groups (channels divisible "
                        "by the number of classes) (default: projection)")
    p.add_argument("--input-norm", choices=list(INPUT_NORMS), default="none",
                   help="--algo mf --arch mlp: layer-normalise every layer's input (per example, mean 0 and "
                        "variance 1 over its features, as DeeperForward does between blocks) before its dense "
                        "map; a remedy for deep MF, whose upper layers start on tiny inputs (default: none)")
    p.add_argument("--epochs", type=positive_int, default=DEFAULT_EPOCHS,
                   help=f"passes over the training set (default: {DEFAULT_EPOCHS})")
    p.add_argument("--batch-size", type=positive_int, default=256, help="examples per step (default: 256)")
    p.add_argument("--lr", type=positive_float, default=DEFAULT_LR,
                   help=f"learning rate (default: {DEFAULT_LR:g}, chosen on validation for MF and BP; "
                        "the paper's: 1e-3)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam", help="(default: adam)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine", "step"], default=DEFAULT_SCHEDULE,
                   help="constant, cosine decay from --lr to 0 over all steps, or step: divided by 10 "
                        f"after each epoch named by --lr-steps (default: {DEFAULT_SCHEDULE}; the paper's: constant)")
    p.add_argument("--lr-steps", type=positive_int, nargs="+", default=None, metavar="E",
                   help="--lr-schedule step: the epochs after which the rate is divided by 10, "
                        "e.g. 60 90 (PEPITA's published schedule over 100 epochs)")
    p.add_argument("--no-bias", action="store_true",
                   help="layers without biases (the paper's parameter counts for the MLP)")
    p.add_argument("--seed", type=int, default=0, help="fixes initial weights and batch order (default: 0)")
    p.add_argument("--predict", choices=["bp", "ff"], default="bp",
                   help="MF prediction mode for the headline accuracy: last layer's goodness (bp) "
                        "or the sum over layers (ff); both are always reported (default: bp)")
    p.add_argument("--train-subset", type=positive_int, default=None, metavar="N",
                   help="train on the first N training examples only (quick runs)")
    p.add_argument("--test-subset", type=positive_int, default=None, metavar="N",
                   help="evaluate on the first N test examples only")
    p.add_argument("--validation", type=nonnegative_int, default=0, metavar="N",
                   help="hold out N training examples as a validation set (default: 0)")
    p.add_argument("--augment", action="store_true",
                   help="cifar10/cifar100: a random crop (padding 4) and horizontal flip of every training batch")
    p.add_argument("--no-normalize", action="store_true",
                   help="keep pixels in [0, 1] (features as published) instead of standardising with the "
                        "data set's per-channel mean and std (tabular: the training split's, per feature)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write config.json, metrics.json, model.npz and checkpoints here (a folder that "
                        "holds a run is refused: see --resume and --overwrite)")
    p.add_argument("--resume", type=Path, default=None, metavar="DIR",
                   help="continue the run recorded in DIR with its recorded settings, from its latest "
                        "checkpoint; --epochs may be raised to train further")
    p.add_argument("--overwrite", action="store_true",
                   help="--out DIR holds a run: remove its files (config.json, metrics.json, model.npz, "
                        "checkpoints/) and start a new one")
    p.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                   help="with --out: also write a checkpoint every N steps (default: after every epoch only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--pipeline", nargs="?", const="threads", default=None, choices=["threads", "ray"],
                   help="--algo mf: the layers run concurrently (layer i on batch t while layer i+1 is on "
                        "batch t-1), the same numbers as without: one thread each (threads, the bare flag; "
                        "minimf/parallel/pipeline.py) or one Ray actor each, on this machine or a cluster "
                        "(ray; minimf/parallel/ray_pipeline.py)")
    p.add_argument("--timeline", type=Path, default=None, metavar="FILE",
                   help="--pipeline: record when each layer trained each batch, as JSON (draw it with "
                        "python -m minimf.parallel.timeline FILE; minimf/parallel/timeline.py)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="--pipeline ray: join a running Ray cluster (auto, or HOST:PORT of `ray start --head`); "
                        "default: a local Ray instance that starts and stops with the run")
    p.add_argument("--cpus-per-layer", type=positive_float, default=1, metavar="C",
                   help="--pipeline ray: CPUs reserved for each layer's actor, and its BLAS threads (default: 1)")
    p.add_argument("--gpus-per-layer", type=nonnegative_float, default=0, metavar="G",
                   help="--pipeline ray --backend cupy: each layer's share of a GPU (0.5: two layers on one "
                        "device) (default: 0; with --backend cupy: 1)")
    p.add_argument("--split-units", type=positive_int, default=None, metavar="T",
                   help="--algo mf --arch mlp, NumPy: each layer's units shared out between T threads; the "
                        "same numbers up to float rounding (minimf/parallel/unit_split.py). Start with OPENBLAS_NUM_THREADS=1")
    p.add_argument("--split-batch", type=positive_int, default=None, metavar="T",
                   help=f"--algo {'/'.join(algos_with('BATCH_SPLIT'))}, NumPy: each batch's examples shared out between T "
                        "threads; the same numbers up to float rounding (minimf/parallel/batch_split.py). "
                        "Start with OPENBLAS_NUM_THREADS=1")
    p.add_argument("--micro-batch", type=positive_int, default=None, metavar="M",
                   help="--split-batch: parts of at most M examples, taken by the threads in turn (default: one "
                        "part per thread); smaller parts keep a CNN's im2col matrices nearer the cache")
    return p


RESTARTS = 3   # --pipeline ray: times a run whose worker died continues from its last checkpoint


def main(argv=None, restarts=RESTARTS):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(argv)
    try:
        args, argv = resumed_arguments(parser, args, argv) if args.resume else (args, argv)
        check_output(parser, args)
    except RunFolderError as err:
        parser.error(str(err))
    info = DATASETS[args.dataset]
    check_dataset(parser, args, info)
    check_architecture(parser, args, info)
    check_credit(parser, args)            # before the checks below, which know only the local rules
    check_input_norm(parser, args)
    if args.arch == "cnn" and network_class(args) is None:
        parser.error(f"--algo {args.algo} has no convolutional network in minimf; use --arch mlp")
    if args.arch == "mlp" and network_class(args) is None:
        parser.error(f"--algo {args.algo} has no MLP in minimf; use --arch cnn")
    if args.pipeline and not network_class(args).PIPELINE:
        parser.error(f"--pipeline is for --algo {', '.join(algos_with('PIPELINE'))} (its layers do not wait for "
                     f"each other), not {args.algo}")
    check_parallel(parser, args)
    check_readout(parser, args, num_classes(args.dataset, args.labels))
    check_lr_steps(parser, args)
    xp = choose_backend(parser, args)
    try:
        data = prepare_data(args, xp)
    except DatasetError as err:  # missing and not downloadable, or damaged: the message says what to do
        print(f"error: {err}", file=sys.stderr)
        return 1
    except MemoryError as err:   # the data set itself does not fit (on the GPU: CuPy's OutOfMemoryError)
        print(f"error: out of memory copying the data set to {'the GPU' if args.backend == 'cupy' else 'memory'} "
              f"({err}); try --train-subset N", file=sys.stderr)
        return 1
    classes = num_classes(args.dataset, args.labels)
    net = build_net(args, data["train"][0].shape[1:], classes)
    try:
        checkpoint = latest_checkpoint(args.out) if args.resume else None
    except RunFolderError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if checkpoint is not None and len(checkpoint[1]["history"]) > args.epochs:
        parser.error(f"--epochs {args.epochs}: the run in {args.out} has already finished "
                     f"{len(checkpoint[1]['history'])} epochs")
    config = describe_run(args, net, data, argv)
    if args.out:
        atomic_write_json(args.out / "config.json", config)
    shape = "x".join(map(str, info.input_shape))
    layers = f"sizes {net.sizes}" if args.arch == "mlp" else f"CNN channels {net.channels} on {shape}"
    credit = " (global credit)" if args.credit == "global" else ""
    print(f"minimf {__version__}: {args.algo.upper()}{credit} on {info.title}, {layers} -> {classes} classes, "
          f"{args.backend}, {len(data['train'][1])} training examples, {args.epochs} epochs")
    if checkpoint is not None:
        print(f"resuming from {checkpoint[2]}")
    try:
        history = train(net, data, args, checkpoint, config)
    except Interrupted as stop:
        print(f"interrupted at epoch {stop.epoch}, step {stop.step}: " +
              (f"checkpoint saved; continue with: python -m minimf.train --resume {args.out}" if args.out
               else "nothing saved (no --out)"), file=sys.stderr)
        return 130
    except TrainingDiverged as err:
        return stopped(f"error: {err}", args)
    except CheckpointError as err:   # a checkpoint that verifies but does not fit the recorded network
        print(f"error: {err}", file=sys.stderr)
        return 1
    except RayPipelineError as err:  # an unreachable cluster, or one without room for the layers
        return stopped(f"error: {err}", args)
    except WorkerDied as err:
        if not args.out or restarts == 0:
            return stopped(f"error: {err}" + ("" if args.out else " (no --out, so no checkpoint)"), args)
        print(f"note: {err}; continuing from the last checkpoint in {args.out}", file=sys.stderr)
        return main(["--resume", str(args.out)], restarts - 1)
    except OSError as err:   # a full disk, a folder made read-only during the run
        return stopped(f"error: could not write the run's files in {args.out} ({err})", args)
    except MemoryError as err:   # CuPy's OutOfMemoryError is a MemoryError, as NumPy's is
        where = "the GPU" if args.backend == "cupy" else "this machine"
        return stopped(f"error: out of memory on {where} with --batch-size {args.batch_size} ({err}); "
                       f"try a smaller --batch-size, e.g. {max(1, args.batch_size // 2)}", args)
    final = history[-1]["test_acc"]
    mode = f" ({MODE_NAMES[headline_mode(net, args)]})" if len(net.EVALUATION_MODES) > 1 else ""
    print(f"test accuracy: {100 * final:.2f}%{mode}")
    return 0


def resumed_arguments(parser, args, argv):
    """(args, argv) of the run recorded in --resume DIR: its recorded arguments, with the options
    that change no number (--epochs, --no-progress, --checkpoint-every, --data-dir) as given now.
    Any other option given now must agree with the record (RunFolderError names each that does not)."""
    folder = args.resume
    recorded, settings = recorded_arguments(folder)
    given = given_options(build_parser(), argv)
    if "out" in given or "overwrite" in given:
        raise RunFolderError(f"--resume {folder} continues in {folder}: leave --out and --overwrite out")
    wrong = contradictions(given, settings)
    if wrong:
        raise RunFolderError(f"--resume {folder}: {', '.join(wrong)} contradicts the recorded run; leave "
                             "it out to resume as recorded (only --epochs may be raised)")
    changed = [a for dest in MAY_CHANGE if dest in given and dest != "resume"
               for a in _as_argv(parser, dest, given[dest])]
    new_argv = [a for a in recorded if a not in ("--overwrite",)] + changed
    resumed = parser.parse_args(new_argv)
    keep_recorded_settings(resumed, settings, given)
    resumed.out, resumed.resume = Path(folder), Path(folder)
    return resumed, new_argv


def keep_recorded_settings(resumed, settings, given):
    """Every option not given now takes its recorded value, not today's default: a run recorded before
    a default changed (the learning rate, the schedule, the epochs) resumes with the numbers it began with."""
    for dest, value in settings.items():
        if dest in given or dest in ("out", "resume", "overwrite") or not hasattr(resumed, dest):
            continue
        now = getattr(resumed, dest)
        setattr(resumed, dest, Path(value) if isinstance(now, Path) and value is not None else value)


def _as_argv(parser, dest, value):
    """The command-line words that set ``dest`` to ``value`` (a later word overrides an earlier one)."""
    action = next(a for a in parser._actions if a.dest == dest)
    if isinstance(value, bool):
        return [action.option_strings[0]] if value else []
    return [action.option_strings[0], str(value)]


def check_output(parser, args):
    """--out names a folder this run may write to (a new run: one that holds no run, unless
    --overwrite); --overwrite and --checkpoint-every need --out."""
    if args.overwrite and not args.out:
        parser.error("--overwrite goes with --out DIR")
    if args.checkpoint_every and not args.out:
        parser.error("--checkpoint-every needs --out DIR, where the checkpoints are written")
    if args.out and not args.resume:
        prepare_out_folder(args.out, args.overwrite)


def stopped(message, args):
    """Say why the run stopped and that the files of the last finished epoch are intact; exit code 1."""
    print(f"{message}; stopped. Files in {args.out} hold the last finished epoch." if args.out
          else f"{message}; stopped.", file=sys.stderr)
    return 1


def choose_backend(parser, args):
    """The array module of --backend, on the GPU of --device; every failure a usage error that says why."""
    if args.backend == "numpy" and strict_cupy_requested():
        say_once(f"note: {STRICT_CUPY_VAR}=1 is ignored with --backend numpy (it stands in for CuPy only)")
    if args.device is not None and args.backend != "cupy":
        parser.error("--device picks a GPU: it goes with --backend cupy")
    try:
        xp = get_backend(args.backend)
    except BackendError as err:
        parser.error(str(err))
    if args.device is not None:
        count = xp.cuda.runtime.getDeviceCount()
        if args.device >= count:
            parser.error(f"--device {args.device}: this machine has {count} CUDA device"
                         f"{'s' if count != 1 else ''} (numbered from 0)")
        xp.cuda.Device(args.device).use()
    return xp


def check_dataset(parser, args, info):
    """Options that only some data sets accept, and a validation split smaller than the training set."""
    n_train = info.sizes["train"]
    if args.validation >= n_train:
        parser.error(f"--validation must be below {n_train} ({info.name} has {n_train} training examples), "
                     f"got {args.validation}")
    if args.augment and info.name not in AUGMENTED:
        parser.error(f"--augment is for {' and '.join(AUGMENTED)} (crops and mirror images), not {info.name}")
    if args.labels == "coarse" and not info.coarse_classes:
        parser.error(f"--labels coarse is for cifar100; {info.name} has one set of labels")


def check_architecture(parser, args, info):
    """--hidden belongs to the MLP and --channels to the CNN; fill in the default of the one in use."""
    if args.arch == "cnn" and info.kind != "image":
        parser.error(f"--arch cnn needs images; {info.name} is {info.kind} data (use --arch mlp)")
    if args.arch == "mlp":
        if args.channels is not None:
            parser.error("--channels is for --arch cnn; the MLP's widths are set with --hidden")
        args.hidden = list(DEFAULT_HIDDEN) if args.hidden is None else args.hidden
        return
    if args.hidden is not None:
        parser.error("--hidden is for --arch mlp; the CNN's widths are set with --channels")
    args.channels = list(DEFAULT_CHANNELS) if args.channels is None else args.channels
    try:
        block_shapes(info.input_shape, args.channels)
    except ValueError as err:
        parser.error(f"--channels: {err}")


# Why a --credit global network refuses a trainer (its class sets the flag named here to False)
WHY_NOT_GLOBAL = {"PIPELINE": "every layer waits for the error of all the layers above it, so the layers cannot "
                              "run concurrently",
                  "UNIT_SPLIT": "a unit's error comes down through every unit of the layer above, so the units "
                                "cannot learn apart",
                  "BATCH_SPLIT": "not checked for this network"}


def check_credit(parser, args):
    """--credit global: only --algo mf and ff with --arch mlp (GLOBAL_CREDIT), and only with the
    trainers its network class allows (PIPELINE, UNIT_SPLIT, BATCH_SPLIT)."""
    if args.credit == "local":
        return
    if args.algo not in GLOBAL_CREDIT or args.arch != "mlp":
        parser.error(f"--credit global is for --algo {' or '.join(GLOBAL_CREDIT)} with --arch mlp, not --algo "
                     f"{args.algo} --arch {args.arch}")
    net_class = GLOBAL_CREDIT[args.algo]
    for flag, value, attr in (("--pipeline", args.pipeline, "PIPELINE"),
                              ("--split-units", args.split_units, "UNIT_SPLIT"),
                              ("--split-batch", args.split_batch, "BATCH_SPLIT")):
        if value and not getattr(net_class, attr):
            parser.error(f"{flag} does not go with --algo {args.algo} --credit global ({net_class.__name__}): "
                         f"{WHY_NOT_GLOBAL[attr]}; use --credit local")


def check_input_norm(parser, args):
    """--input-norm other than none: MF's MLP with local credit only (the global rule would have to
    differentiate the normalisation; MF's CNN has --readout channel-group for DeeperForward's)."""
    if args.input_norm == "none":
        return
    if args.algo != "mf" or args.arch != "mlp":
        parser.error(f"--input-norm {args.input_norm} is for --algo mf --arch mlp, not --algo {args.algo} "
                     f"--arch {args.arch}")
    if args.input_norm not in network_class(args).INPUT_NORMS:
        parser.error(f"--input-norm {args.input_norm} does not go with --credit {args.credit}: the summed loss "
                     "would have to be differentiated through the normalisation; use --credit local")


def check_parallel(parser, args):
    """At most one of --pipeline, --split-units, --split-batch, each for the rules and networks it
    supports, on NumPy; --micro-batch only with --split-batch."""
    chosen = [flag for flag, value in (("--pipeline", args.pipeline), ("--split-units", args.split_units),
                                       ("--split-batch", args.split_batch)) if value]
    if len(chosen) > 1:
        parser.error(f"choose one way to train in parallel, not {' and '.join(chosen)}")
    if args.split_units and not network_class(args).UNIT_SPLIT:
        parser.error(f"--split-units is for --algo {', '.join(algos_with('UNIT_SPLIT'))} --arch mlp (dense layers "
                     "whose units learn from their own loss)")
    if args.split_batch and not network_class(args).BATCH_SPLIT:
        parser.error(f"--split-batch is for --algo {', '.join(algos_with('BATCH_SPLIT'))}, not {args.algo}")
    if (args.split_units or args.split_batch) and args.backend != "numpy":
        parser.error(f"{chosen[0]} shares work out between CPU threads: it needs --backend numpy")
    if args.micro_batch and not args.split_batch:
        parser.error("--micro-batch goes with --split-batch")
    check_ray_options(parser, args)
    if args.timeline and not args.pipeline:
        parser.error("--timeline records a pipeline's layers: it goes with --pipeline")
    threaded = chosen[0] if chosen else None
    if threaded and "1" not in (os.environ.get(var) for var in BLAS_THREAD_VARS):
        print(f"note: {threaded} runs threads of its own; start it with OPENBLAS_NUM_THREADS=1, or every "
              "thread's BLAS uses every core and they fight over them (see the README's Benchmark section)",
              file=sys.stderr)


def check_ray_options(parser, args):
    """--ray-address, --cpus-per-layer and --gpus-per-layer go with --pipeline ray; Ray must import;
    GPUs are for --backend cupy, which gets one per layer unless told otherwise."""
    ray_options = [flag for flag, given in (("--ray-address", args.ray_address is not None),
                                            ("--cpus-per-layer", args.cpus_per_layer != 1),
                                            ("--gpus-per-layer", args.gpus_per_layer != 0)) if given]
    if args.pipeline != "ray":
        if ray_options:
            parser.error(f"{ray_options[0]} goes with --pipeline ray")
        return
    if args.gpus_per_layer and args.backend != "cupy":
        parser.error("--gpus-per-layer puts the layers on GPUs: it goes with --backend cupy")
    if args.backend == "cupy" and not args.gpus_per_layer and not strict_cupy_requested():
        args.gpus_per_layer = 1
    try:
        import_ray()
    except RayPipelineError as err:
        parser.error(str(err))


def check_readout(parser, args, classes):
    """--readout other than projection: MF's CNN only, and every block's channels split into C groups."""
    if args.readout == "projection":
        return
    if args.algo != "mf" or args.arch != "cnn":
        parser.error(f"--readout {args.readout} is for --algo mf --arch cnn")
    uneven = [c for c in args.channels if c % classes]
    if uneven:
        parser.error(f"--readout {args.readout} splits each block's channels into one group per class: "
                     f"channels must be divisible by {classes}, got {uneven}")


def check_lr_steps(parser, args):
    """--lr-steps goes with --lr-schedule step, and step needs it."""
    if args.lr_schedule == "step" and not args.lr_steps:
        parser.error("--lr-schedule step needs --lr-steps, the epochs after which the rate is divided by 10")
    if args.lr_steps and args.lr_schedule != "step":
        parser.error(f"--lr-steps is for --lr-schedule step, not {args.lr_schedule}")


def prepare_data(args, xp):
    """The data set as backend arrays: {"train": (x, y), "test": (x, y), "validation": (x, y) or None}.

    x is (N, D) for --arch mlp (images flattened to C*H*W) and (N, C, H, W) for --arch cnn. The
    validation examples are carved out of the training split by ``carve_validation`` (seed --seed), then
    --train-subset and --test-subset keep the first examples. Unless --no-normalize, every split is
    standardised with the data set's per-channel constants (tabular data: the mean and std of each
    feature over the training examples used).
    """
    flatten = args.arch == "mlp"
    options = dict(data_dir=args.data_dir, flatten=flatten, labels=args.labels, progress=not args.no_progress)
    train, validation = carve_validation(load(args.dataset, "train", **options), args.validation, args.seed)
    splits = {"train": _first(train, args.train_subset),
              "test": _first(load(args.dataset, "test", **options), args.test_subset),
              "validation": validation}
    if not args.no_normalize:
        mean, std = normalization(args.dataset, x_train=splits["train"][0], flatten=flatten)
    out = {}
    for name, split in splits.items():
        if split is None:
            out[name] = None
            continue
        x, y = split
        if not args.no_normalize:
            x = (x - mean) / std
        out[name] = check_split(name, xp.asarray(x, dtype="float32"), xp.asarray(y), args, xp)
    return out


def check_split(name, x, y, args, xp):
    """The values of a whole split checked once (finite features, labels in range: two host syncs),
    so that training and evaluation need not check them batch by batch. Returns (x, y)."""
    try:
        check_features(x, x.shape[1:], xp, "float32")
        check_labels(y, x.shape[0], num_classes(args.dataset, args.labels), xp)
    except ValueError as err:
        raise DatasetError(f"the {name} split of {args.dataset} is damaged: {err}") from None
    return x, y


def _first(split, n):
    """The first n examples of an (x, y) pair (all of them for n=None)."""
    x, y = split
    return (x, y) if n is None else (x[:n], y[:n])


def build_net(args, input_shape, num_classes=10):
    """The network of --algo, --arch and --credit for examples of ``input_shape``: (D,) or (C, H, W)."""
    common = dict(num_classes=num_classes, backend=args.backend, seed=args.seed, bias=not args.no_bias,
                  optimizer=args.optimizer, lr=args.lr)
    if args.arch == "mlp":
        if args.algo == "mf":
            common["input_norm"] = args.input_norm
        return network_class(args)(sizes=[input_shape[0]] + list(args.hidden), **common)
    cnn = network_class(args)
    if args.algo == "mf":
        common["readout"] = args.readout
    return cnn(input_shape=input_shape, channels=args.channels, **common)


def describe_run(args, net, data, argv):
    """Everything needed to repeat the run, for config.json."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {
        "minimf_version": __version__,
        "command": " ".join(["python -m minimf.train", *argv]),
        "argv": list(argv),                    # what --resume repeats
        "settings": settings,
        "dataset": args.dataset,
        "num_classes": net.num_classes,
        **({"sizes": net.sizes} if args.arch == "mlp" else
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
        **({"device": net.xp.cuda.Device().id} if args.backend == "cupy" else {}),
    }


class Interrupted(RuntimeError):
    """Ctrl-C stopped the run between two steps (with --out, after a checkpoint at that step)."""

    def __init__(self, epoch, step):
        super().__init__(f"interrupted at epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


class StopRequest:
    """Ctrl-C (SIGINT) during training sets ``requested``: no further batch is handed out, the steps
    already handed out finish (the pipeline drains), and the run stops at a step boundary, where its
    state is whole. A second Ctrl-C stops at once. Only the main thread can take signals; elsewhere
    this does nothing."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after the current step (Ctrl-C again to stop at once)", file=sys.stderr)


@dataclass
class Progress:
    """Where a run is: ``epoch`` (counted from 1) and ``step`` (steps finished in it), the records of
    the finished epochs, this epoch's losses so far (a (step, L) host array, or None) and the batch
    order's random state before this epoch's order was drawn."""
    epoch: int = 1
    step: int = 0
    history: list = field(default_factory=list)
    losses: object = None
    order_state: dict = None


def train(net, data, args, checkpoint=None, config=None):
    """Train for ``args.epochs`` epochs; print and (with ``args.out``) save after each one.

    ``checkpoint``: (arrays, info, folder) of this run's latest checkpoint (``run_folder``), to
    continue from exactly where it was; ``config``: what config.json holds, kept in checkpoints.
    Returns the list of per-epoch metric records. Raises ``TrainingDiverged`` when a loss turns
    NaN or infinite, before anything of that epoch is written, and ``Interrupted`` after Ctrl-C.
    """
    x_train, y_train = data["train"]
    rng = make_rng(args.seed)                                     # the batch order
    # a second stream for the crops and flips, so that --augment leaves the batch order unchanged
    augment_rng = make_rng([args.seed, 1]) if args.augment else None
    steps_per_epoch = math.ceil(x_train.shape[0] / args.batch_size)
    schedule = learning_rates(args, steps_per_epoch)
    progress = Progress() if checkpoint is None else restore(net, checkpoint, rng, augment_rng)
    saver = Checkpointer(net, args, config, augment_rng)
    if args.out and checkpoint is not None and progress.step == 0 and progress.history:
        write_epoch_files(net, args, progress.history)  # a kill may have come between the checkpoint and these
    timeline = Timeline(len(net.layers)) if args.timeline else None
    with StopRequest() as stop, layer_workers(net, args, timeline) as trainer:
        while progress.epoch <= args.epochs:
            epoch, start = progress.epoch, time.perf_counter()
            progress.order_state = rng.bit_generator.state         # before this epoch's order is drawn
            rates = schedule[(epoch - 1) * steps_per_epoch: epoch * steps_per_epoch]
            train_loss = train_one_epoch(net, x_train, y_train, args, rng, rates, augment_rng, progress, stop, saver,
                                         trainer)
            record = {"epoch": epoch, **evaluate(net, data, args),
                      "seconds": round(time.perf_counter() - start, 3), "train_loss": train_loss}
            progress = Progress(epoch + 1, 0, progress.history + [record], None, rng.bit_generator.state)
            print(format_record(record, args.epochs))
            if args.out:
                saver.save(progress)
                write_epoch_files(net, args, progress.history)
            if timeline is not None:
                timeline.save(args.timeline)
    return progress.history


def layer_workers(net, args, timeline=None):
    """The pipeline of --pipeline for the whole run: the layers as Ray actors (ray;
    minimf/parallel/ray_pipeline.py), or as threads (minimf/parallel/pipeline.py); else nothing."""
    if args.pipeline == "ray":
        return RayPipeline(net, args.ray_address, args.cpus_per_layer, args.gpus_per_layer, timeline=timeline)
    if args.pipeline == "threads":
        return contextlib.nullcontext(ThreadedPipeline(net, timeline))
    return contextlib.nullcontext()


class ThreadedPipeline:
    """``train_pipelined`` with the run's timeline, behind the same ``train`` as the Ray pipeline's."""

    def __init__(self, net, timeline=None):
        self.net, self.timeline = net, timeline

    def train(self, batches, rates=None, validate=True):
        return train_pipelined(self.net, batches, rates, validate, self.timeline)


def write_epoch_files(net, args, history):
    """model.npz, then metrics.json (so that metrics.json never names an epoch whose model is missing)."""
    save(net, args.out / "model.npz")
    atomic_write_json(args.out / "metrics.json", history)


class Checkpointer:
    """Writes this run's checkpoints (with --out): the network's whole training state, the
    augmentation's random state, and ``Progress`` (which holds the batch order's)."""

    def __init__(self, net, args, config, augment_rng):
        self.net, self.args, self.config, self.augment_rng = net, args, config, augment_rng

    def save(self, progress):
        arrays, net_info = training_state(self.net)
        if progress.losses is not None:
            arrays["progress/epoch_losses"] = progress.losses
        info = {"epoch": progress.epoch, "step": progress.step, "history": progress.history,
                "order_rng": progress.order_state,
                "augment_rng": None if self.augment_rng is None else self.augment_rng.bit_generator.state,
                "net": net_info, "config": self.config, "minimf_version": __version__,
                "numpy": np.__version__}
        write_checkpoint(self.args.out, progress.epoch, progress.step, arrays, info)


def restore(net, checkpoint, order_rng, augment_rng):
    """Put a checkpoint's state back into ``net`` and the two generators; return its Progress."""
    arrays, info, folder = checkpoint
    try:
        restore_training_state(net, arrays, info["net"])     # it reads its own keys; progress/ is ours
        order_rng.bit_generator.state = info["order_rng"]
        if augment_rng is not None:
            augment_rng.bit_generator.state = info["augment_rng"]
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{folder}: does not fit this run's network and settings ({err})") from None
    return Progress(info["epoch"], info["step"], info["history"], arrays.get("progress/epoch_losses"),
                    info["order_rng"])


def learning_rates(args, steps_per_epoch):
    """The learning rate of every step t of the T = steps_per_epoch * epochs steps:
    constant; cosine, lr * (1 + cos(pi * t / T)) / 2; or step, lr / 10^k where k counts the
    epochs of --lr-steps already finished (step t is in epoch t // steps_per_epoch, counted from 0,
    so with --lr-steps 60 the 61st epoch is the first at lr / 10, as PyTorch's MultiStepLR does)."""
    total_steps = steps_per_epoch * args.epochs
    if args.lr_schedule == "constant":
        return [args.lr] * total_steps
    if args.lr_schedule == "step":
        return [args.lr * 0.1 ** sum(t // steps_per_epoch >= e for e in args.lr_steps) for t in range(total_steps)]
    return [args.lr * (1 + math.cos(math.pi * t / total_steps)) / 2 for t in range(total_steps)]


def train_one_epoch(net, x, y, args, rng, rates, augment_rng, progress, stop, saver, trainer=None):
    """The rest of epoch ``progress.epoch``, from step ``progress.step``: a shuffled pass over (x, y),
    step k with learning rate ``rates[k]``; with ``augment_rng`` every batch is randomly cropped and
    flipped (see minimf/datasets/augment.py) before the step. The steps run in chunks that end at
    every --checkpoint-every boundary (a checkpoint is written there) or when Ctrl-C asks to stop.

    Returns the mean training loss (a list with one entry per layer for MF, and for FF one per
    layer followed by the one-pass read-out's)."""
    image_shape = DATASETS[args.dataset].input_shape
    n = x.shape[0]
    order = net.xp.asarray(rng.permutation(n))
    starts = list(range(0, n, args.batch_size))
    bar = tqdm(total=len(starts), initial=progress.step, desc=f"epoch {progress.epoch}", leave=False,
               disable=args.no_progress, unit="batch")

    def batches(chunk):          # handed out one by one; none after Ctrl-C
        for start in chunk:
            if stop.requested:
                return
            idx = order[start:start + args.batch_size]
            bar.update()
            yield (x[idx] if augment_rng is None else augment_batch(x[idx], image_shape, augment_rng)), y[idx]

    while progress.step < len(starts) and not stop.requested:
        end = chunk_end(progress, len(starts), args.checkpoint_every)
        step_losses = run_steps(net, batches(starts[progress.step:end]), rates[progress.step:end], args, trainer)
        if step_losses:
            losses = losses_to_host(net.xp, step_losses)     # (steps, L): the chunk's one transfer
            for step, row in enumerate(losses, start=progress.step + 1):
                check_finite(row, progress.epoch, step)
            progress.losses = losses if progress.losses is None else np.concatenate([progress.losses, losses])
            progress.step += len(losses)
        if args.out and progress.step < len(starts) and (stop.requested or progress.step == end):
            saver.save(progress)                             # a --checkpoint-every boundary, or Ctrl-C
    bar.close()
    if stop.requested:
        raise Interrupted(progress.epoch, progress.step)
    sizes = np.minimum(args.batch_size, n - np.asarray(starts))   # the last batch may be smaller
    mean = (progress.losses * sizes[:, None]).sum(axis=0) / n
    if net.LOSSES == "per_layer":
        return [round(float(v), 6) for v in mean]
    return round(float(mean[0]), 6)


def chunk_end(progress, steps, every):
    """The step at which the current chunk of the epoch ends: the epoch's end, or the next step
    whose number counted over the whole run is a multiple of ``every`` (--checkpoint-every)."""
    if not every:
        return steps
    done = (progress.epoch - 1) * steps + progress.step             # steps finished in the whole run
    return min(steps, progress.step + every - done % every)


def run_steps(net, batches, rates, args, trainer=None):
    """Train on ``batches`` with the trainer the options choose (``trainer``: the Ray pipeline, made
    once per run); the losses of every step, in order. The values were checked once by
    prepare_data: validate=False, no host sync in a step."""
    if args.pipeline:   # threads or Ray actors; the losses arrive after the whole chunk
        return trainer.train(batches, rates, validate=False)
    if args.split_units:
        return train_unit_split(net, batches, args.split_units, rates, validate=False)
    if args.split_batch:
        return train_batch_split(net, batches, args.split_batch, args.micro_batch, rates, validate=False)
    return [train_step_at(net, xb, yb, rate) for (xb, yb), rate in zip(batches, rates)]


def losses_to_host(xp, step_losses):
    """Every step's losses as a (steps, L) host array, read in ONE transfer from the device.

    step_losses: one entry per step, a loss or a list of L losses (0-d arrays on the backend, or
    floats from the CPU trainers)."""
    rows = [loss if isinstance(loss, list) else [loss] for loss in step_losses]
    return to_numpy(xp.stack([value for row in rows for value in row])).reshape(len(rows), -1)


def train_step_at(net, x, y, lr):
    """``net.train_step(x, y)`` with every optimiser's learning rate set to ``lr`` first; x and y
    come from a data set checked once, so the step skips the value checks (no host sync)."""
    for optimizer in net.optimizers:
        optimizer.lr = lr
    return net.train_step(x, y, validate=False)


def check_finite(losses, epoch, step):
    """Raise ``TrainingDiverged`` naming epoch, step and layer if any loss is NaN or infinite."""
    for layer, loss in enumerate(losses, start=1):
        if not math.isfinite(loss):
            where = f"layer {layer}" if len(losses) > 1 else "the output layer"
            raise TrainingDiverged(f"the training loss became {loss} at epoch {epoch}, step {step}, {where}")


def headline_mode(net, args):
    """The prediction mode of the headline ``test_acc``: --predict where the network has it (MF,
    SFF), else its first (FF: all labels; BP, FA, DFA: its one accuracy)."""
    return args.predict if args.predict in net.EVALUATION_MODES else net.EVALUATION_MODES[0]


def evaluate(net, data, args):
    """Test (and validation) accuracy: ``test_acc`` in the headline mode and, for networks with
    several modes (``net.EVALUATION_MODES``), ``test_acc_<mode>`` for each, and each layer's
    accuracy where ``evaluate`` gives them."""
    record = {}
    for split in ("test", "validation"):
        if data[split] is None:
            continue
        result = net.evaluate(*data[split], validate=False)   # checked once by prepare_data
        prefix = "test" if split == "test" else "val"
        record[f"{prefix}_acc"] = result[headline_mode(net, args)]
        if len(net.EVALUATION_MODES) > 1:
            record.update({f"{prefix}_acc_{mode}": result[mode] for mode in net.EVALUATION_MODES})
        if "layers" in result:
            record[f"layer_{prefix}_acc"] = result["layers"]
    return record


def format_record(r, epochs):
    """One line per epoch, e.g. ``epoch 2/5  loss 0.21 0.12  test bp 97.10%  ff 97.32% ...``."""
    loss = " ".join(f"{v:.4f}" for v in np.atleast_1d(r["train_loss"]))
    line = f"epoch {r['epoch']}/{epochs}  loss {loss}  "
    layers = " ".join(f"{100 * a:.2f}%" for a in r.get("layer_test_acc", []))
    if "test_acc_bp" in r:
        line += f"test bp {100 * r['test_acc_bp']:.2f}%  ff {100 * r['test_acc_ff']:.2f}%  layers {layers}  "
    elif "test_acc_one_pass" in r:
        line += (f"test all labels {100 * r['test_acc_all_labels']:.2f}%  one pass "
                 f"{100 * r['test_acc_one_pass']:.2f}%  layers {layers}  ")
    else:
        line += f"test {100 * r['test_acc']:.2f}%  "
    if "val_acc" in r:
        line += f"val {100 * r['val_acc']:.2f}%  "
    return line + f"{r['seconds']:.1f} s"


if __name__ == "__main__":
    sys.exit(main())
