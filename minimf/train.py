"""The command line: train Mono-Forward (or a rule it is compared with) on MNIST or another data set.

    python -m minimf.train                              # MF on MNIST, 2x1000 ReLU, Adam with a cosine decay
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
    python -m minimf.train --out runs/a --checkpoint-every 100
    python -m minimf.train --resume runs/a                 # continue it; --epochs 20 to train further

This module only parses: every option becomes the field of the same name of a ``RunConfig``
(minimf/training/config.py), which ``train_run`` (minimf/training/run.py) validates completely before
it touches a file, then trains. What happens during a run, what it writes and how it resumes is
documented there and in docs/runs.md; here each way a run can end becomes a message and an exit code:

    0    the run finished                      2    a usage error: nothing was written
    1    the run stopped on an error           130  Ctrl-C, 143 SIGTERM: a checkpoint was written
"""
import argparse
import sys
from pathlib import Path

from minimf.argtypes import nonnegative_float, nonnegative_int, positive_float, positive_int
from minimf.backend import BACKENDS
from minimf.checkpoint import CheckpointError
from minimf.datasets import DATASETS, DatasetError
from minimf.parallel.ray_pipeline import RayPipelineError, WorkerDied
from minimf.rules.mono_forward import INPUT_NORMS, READOUTS   # what --input-norm, --readout choose from
from minimf.run_folder import RunFolderError
from minimf.training.config import (DEFAULT_CHANNELS, DEFAULT_EPOCHS, DEFAULT_HIDDEN, DEFAULT_LR, DEFAULT_MIXER,
                                    DEFAULT_SCHEDULE,
                                    ConfigError, RunConfig, resumed)
from minimf.training.loop import EXIT_INTERRUPTED, Interrupted, TrainingDiverged
from minimf.training.records import MODE_NAMES, headline_mode
from minimf.training.registry import ARCHITECTURES, NETWORKS, algos_with
from minimf.training.run import resumed_config, train_run

RESTARTS = 3   # --pipeline ray: times a run whose worker died continues from its last checkpoint
EXIT_STOPPED = 1       # the run stopped on an error; its files hold the last finished epoch
EXIT_USAGE = 2         # a usage error (argparse's code): nothing was written
# EXIT_INTERRUPTED (minimf/training/loop.py), 130 or 143: a checkpoint was written (with --out); --resume continues


def build_parser(defaults=True):
    """The parser of every option; ``defaults=False`` leaves out the options not given (for --resume)."""
    p = argparse.ArgumentParser(prog="python -m minimf.train", argument_default=argparse.SUPPRESS,
                                description="Train Mono-Forward or a rule it is compared with, "
                                            "on MNIST or another data set.")
    p.add_argument("--algo", choices=list(NETWORKS),
                   help="learning rule: Mono-Forward, backprop, Forward-Forward (MLP only), Feedback "
                        "Alignment, Direct Feedback Alignment, PEPITA (MLP only), Scalable Forward-Forward "
                        "(CNN only) (default: mf)")
    p.add_argument("--credit", choices=["local", "global"],
                   help="--algo mf or ff, --arch mlp: where each layer's loss sends its error; local: to its "
                        "own layer only (the rule as published), global: also down through all layers below, "
                        "the sum of the layers' losses backpropagated (minimf/rules/global_credit.py) "
                        "(default: local)")
    p.add_argument("--backend", choices=BACKENDS, help="array library (default: numpy)")
    p.add_argument("--device", type=nonnegative_int, metavar="N",
                   help="--backend cupy: the number of the GPU to train on (default: CuPy's current device, 0)")
    p.add_argument("--dataset", choices=list(DATASETS),
                   help="mnist is packaged; fashion-mnist, cifar10 and cifar100 are downloaded on first use "
                        "into $MINIMF_DATA (or ~/.cache/minimf); breast-cancer and digits need scikit-learn "
                        "(default: mnist)")
    p.add_argument("--labels", choices=["fine", "coarse"],
                   help="cifar100: the 100 fine classes or the 20 coarse superclasses (default: fine)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="where downloaded data sets live (default: $MINIMF_DATA, else ~/.cache/minimf)")
    p.add_argument("--arch", choices=list(ARCHITECTURES),
                   help="dense layers on flattened inputs (N, D), conv blocks (3x3 conv, ReLU, 2x2 average "
                        "pool) on images (N, C, H, W), or an MLP-Mixer on image patches (--algo mf or bp) "
                        "(default: mlp)")
    p.add_argument("--hidden", type=positive_int, nargs="+", metavar="H",
                   help=f"--arch mlp: hidden layer widths (default: {' '.join(map(str, DEFAULT_HIDDEN))})")
    p.add_argument("--channels", type=positive_int, nargs="+", metavar="F",
                   help=f"--arch cnn: channels of each conv block; every block halves the image "
                        f"(default: {' '.join(map(str, DEFAULT_CHANNELS))}, the paper's)")
    p.add_argument("--patch", type=positive_int, metavar="P",
                   help=f"--arch mixer: the side of the square patches, which must divide the image's "
                        f"(default: {DEFAULT_MIXER['patch']})")
    p.add_argument("--width", type=positive_int, metavar="D",
                   help=f"--arch mixer: the numbers per patch between blocks (default: {DEFAULT_MIXER['width']})")
    p.add_argument("--token-hidden", type=positive_int, metavar="H",
                   help=f"--arch mixer: the token-mixing MLP's hidden size (default: {DEFAULT_MIXER['token_hidden']})")
    p.add_argument("--channel-hidden", type=positive_int, metavar="H",
                   help=f"--arch mixer: the channel-mixing MLP's hidden size (default: {DEFAULT_MIXER['channel_hidden']})")
    p.add_argument("--depth", type=positive_int, metavar="L",
                   help=f"--arch mixer: the number of Mixer blocks (default: {DEFAULT_MIXER['depth']})")
    p.add_argument("--readout", choices=list(READOUTS),
                   help="--algo mf --arch cnn: each block's goodness read-out, a projection M of the "
                        "flattened block (MF v1) or DeeperForward's channel groups (channels divisible "
                        "by the number of classes) (default: projection)")
    p.add_argument("--input-norm", choices=list(INPUT_NORMS),
                   help="--algo mf --arch mlp: layer-normalise every layer's input (per example, mean 0 and "
                        "variance 1 over its features, as DeeperForward does between blocks) before its dense "
                        "map; a remedy for deep MF, whose upper layers start on tiny inputs (default: none)")
    p.add_argument("--epochs", type=positive_int,
                   help=f"passes over the training set (default: {DEFAULT_EPOCHS})")
    p.add_argument("--batch-size", type=positive_int, help="examples per step (default: 256)")
    p.add_argument("--lr", type=positive_float,
                   help=f"learning rate (default: {DEFAULT_LR:g}, chosen on validation for MF and BP; "
                        "the paper's: 1e-3)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], help="(default: adam)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine", "step"],
                   help="constant, cosine decay from --lr to 0 over all steps, or step: divided by 10 "
                        f"after each epoch named by --lr-steps (default: {DEFAULT_SCHEDULE}; the paper's: constant)")
    p.add_argument("--lr-steps", type=positive_int, nargs="+", metavar="E",
                   help="--lr-schedule step: the epochs after which the rate is divided by 10, "
                        "e.g. 60 90 (PEPITA's published schedule over 100 epochs)")
    p.add_argument("--no-bias", action="store_true",
                   help="layers without biases (the paper's parameter counts for the MLP)")
    p.add_argument("--seed", type=int, help="fixes initial weights and batch order (default: 0)")
    p.add_argument("--predict", choices=["bp", "ff"],
                   help="MF prediction mode for the headline accuracy: last layer's goodness (bp) "
                        "or the sum over layers (ff); both are always reported (default: bp)")
    p.add_argument("--train-subset", type=positive_int, metavar="N",
                   help="train on the first N training examples only (quick runs)")
    p.add_argument("--test-subset", type=positive_int, metavar="N",
                   help="evaluate on the first N test examples only")
    p.add_argument("--validation", type=nonnegative_int, metavar="N",
                   help="hold out N training examples as a validation set (default: 0)")
    p.add_argument("--augment", action="store_true",
                   help="cifar10/cifar100: a random crop (padding 4) and horizontal flip of every training batch")
    p.add_argument("--no-normalize", action="store_true",
                   help="keep pixels in [0, 1] (features as published) instead of standardising with the "
                        "data set's per-channel mean and std (tabular: the training split's, per feature)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write config.json, metrics.json, model.npz and checkpoints here (a folder that "
                        "holds a run is refused: see --resume and --overwrite)")
    p.add_argument("--resume", type=Path, metavar="DIR",
                   help="continue the run recorded in DIR with its recorded settings, from its latest "
                        "checkpoint; --epochs may be raised to train further")
    p.add_argument("--overwrite", action="store_true",
                   help="--out DIR holds a run: remove its files (config.json, metrics.json, model.npz, "
                        "checkpoints/) and start a new one")
    p.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                   help="with --out: also write a checkpoint every N steps (default: after every epoch only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--pipeline", nargs="?", const="threads", choices=["threads", "ray"],
                   help="--algo mf: the layers run concurrently (layer i on batch t while layer i+1 is on "
                        "batch t-1), the same numbers as without: one thread each (threads, the bare flag; "
                        "minimf/parallel/pipeline.py) or one Ray actor each, on this machine or a cluster "
                        "(ray; minimf/parallel/ray_pipeline.py)")
    p.add_argument("--timeline", type=Path, metavar="FILE",
                   help="--pipeline: record when each layer trained each batch, as JSON (draw it with "
                        "python -m minimf.parallel.timeline FILE; minimf/parallel/timeline.py)")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="--pipeline ray: join a running Ray cluster (auto, or HOST:PORT of `ray start --head`); "
                        "default: a local Ray instance that starts and stops with the run")
    p.add_argument("--cpus-per-layer", type=positive_float, metavar="C",
                   help="--pipeline ray: CPUs reserved for each layer's actor, and its BLAS threads (default: 1)")
    p.add_argument("--gpus-per-layer", type=nonnegative_float, metavar="G",
                   help="--pipeline ray --backend cupy: each layer's share of a GPU (0.5: two layers on one "
                        "device) (default: 0; with --backend cupy: 1)")
    p.add_argument("--split-units", type=positive_int, metavar="T",
                   help="--algo mf --arch mlp, NumPy: each layer's units shared out between T threads; the "
                        "same numbers up to float rounding (minimf/parallel/unit_split.py). Start with OPENBLAS_NUM_THREADS=1")
    p.add_argument("--split-batch", type=positive_int, metavar="T",
                   help=f"--algo {'/'.join(algos_with('BATCH_SPLIT'))}, NumPy: each batch's examples shared out between T "
                        "threads; the same numbers up to float rounding (minimf/parallel/batch_split.py). "
                        "Start with OPENBLAS_NUM_THREADS=1")
    p.add_argument("--micro-batch", type=positive_int, metavar="M",
                   help="--split-batch: parts of at most M examples, taken by the threads in turn (default: one "
                        "part per thread); smaller parts keep a CNN's im2col matrices nearer the cache")
    if defaults:
        p.set_defaults(**RunConfig().to_dict(), resume=None, overwrite=False)
    return p


def main(argv=None, restarts=RESTARTS):
    """Parse, map the options to a RunConfig, train; return the exit code."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(argv)
    try:
        config = configuration(args, argv)
        return run(config, args, argv, restarts)
    except ConfigError as err:
        parser.error(str(err))
    except KeyboardInterrupt:   # a second Ctrl-C, or one before training began: files are whole (atomic writes)
        print("\nstopped at once: every file in the run folder is whole (the last finished epoch, the last "
              "checkpoint); continue with --resume where there is one", file=sys.stderr)
        return EXIT_INTERRUPTED["SIGINT"]


def configuration(args, argv):
    """The RunConfig of the command line: the options as given, or with --resume DIR the recorded
    run's configuration with the options that may change (epochs, progress, checkpoints, data
    folder) as given now; any other option given must agree with the record."""
    if args.overwrite and not args.out:
        raise ConfigError("--overwrite goes with --out DIR")
    if not args.resume:
        return RunConfig(**{k: v for k, v in vars(args).items() if k not in ("resume", "overwrite")})
    given = vars(build_parser(defaults=False).parse_args(argv))
    if "out" in given or "overwrite" in given:
        raise ConfigError(f"--resume {args.resume} continues in {args.resume}: leave --out and --overwrite out")
    given.pop("resume")
    try:
        recorded = resumed_config(args.resume)
    except RunFolderError as err:
        raise ConfigError(str(err)) from None
    return resumed(recorded, given, args.resume)


def run(config, args, argv, restarts):
    """``train_run`` with every way a run can stop turned into a message and an exit code."""
    try:
        net, history = train_run(config, resume=bool(args.resume), overwrite=args.overwrite, argv=argv)
    except (DatasetError, RunFolderError, CheckpointError) as err:   # nothing trained, or a checkpoint that
        print(f"error: {err}", file=sys.stderr)                       # verifies but does not fit the network
        return EXIT_STOPPED
    except Interrupted as stop:
        if stop.old_run_back:
            saved = f"the new run had not finished an epoch, so the run it replaced is back in {config.out}"
        elif config.out:
            saved = f"checkpoint saved; continue with: python -m minimf.train --resume {config.out}"
        else:
            saved = "nothing saved (no --out)"
        print(f"interrupted at epoch {stop.epoch}, step {stop.step} ({stop.signal_name}): {saved}", file=sys.stderr)
        return EXIT_INTERRUPTED[stop.signal_name]
    except TrainingDiverged as err:
        return stopped(f"error: {err}", config)
    except RayPipelineError as err:  # an unreachable cluster, or one without room for the layers
        return stopped(f"error: {err}", config)
    except WorkerDied as err:
        if not config.out or restarts == 0:
            return stopped(f"error: {err}" + ("" if config.out else " (no --out, so no checkpoint)"), config)
        print(f"note: {err}; continuing from the last checkpoint in {config.out}", file=sys.stderr)
        return main(["--resume", str(config.out)], restarts - 1)
    except OSError as err:   # a full disk, a folder made read-only during the run
        return stopped(f"error: could not write the run's files in {config.out} ({err})", config)
    except MemoryError as err:   # CuPy's OutOfMemoryError is a MemoryError, as NumPy's is
        where = "the GPU" if config.backend == "cupy" else "this machine"
        return stopped(f"error: out of memory on {where} with --batch-size {config.batch_size} ({err}); "
                       f"try a smaller --batch-size, e.g. {max(1, config.batch_size // 2)}", config)
    mode = f" ({MODE_NAMES[headline_mode(net, config.predict)]})" if len(net.EVALUATION_MODES) > 1 else ""
    print(f"test accuracy: {100 * history[-1]['test_acc']:.2f}%{mode}")
    return 0


def stopped(message, config):
    """Say why the run stopped and what its folder holds; exit code 1."""
    if not config.out:
        where = ""
    elif (config.out / "metrics.json").exists():
        where = f" Files in {config.out} hold the last finished epoch."
    else:
        where = f" No epoch had finished: {config.out} holds no model."
    print(f"{message}; stopped.{where}", file=sys.stderr)
    return EXIT_STOPPED


if __name__ == "__main__":
    sys.exit(main())
