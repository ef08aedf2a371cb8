"""The training loop: ``fit(net, data, ...)`` trains any minimf network for some epochs.

    from minimf import MonoForwardNet
    from minimf.backend import get_backend
    from minimf.training import fit, prepare_data

    data = prepare_data("mnist", get_backend("numpy"), train_subset=5000)
    net = MonoForwardNet(sizes=[784, 500, 500], seed=0)
    history = fit(net, data, epochs=2, on_epoch=print)    # one record per epoch

An epoch is a shuffled pass over the training split in batches (the order drawn from ``seed``),
each step taken by a trainer (``net.train_step``, or a parallel trainer of
minimf/training/trainers.py) at the rate of the optimisers' schedule, then an evaluation
(minimf/training/records.py). The losses stay on the device during the epoch and are read in one
transfer per chunk of steps; a NaN or infinite loss, or a parameter that is no longer finite at the
end of a chunk, stops the run (``TrainingDiverged``) before that epoch's files are written.

With ``out`` (a run folder, minimf/run_folder.py) every epoch leaves ``model.npz`` and
``metrics.json``, and a checkpoint of the whole training state (parameters, optimiser states, random
streams, progress) is written after every epoch and every ``checkpoint_every`` steps, so that a run
continued from its latest checkpoint (``resume``) ends bit for bit as if it had never stopped.
Ctrl-C (SIGINT) or a scheduler's SIGTERM stops the run at the next step boundary (after a
checkpoint, with ``out``) and raises ``Interrupted``.
"""
import contextlib
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minimf import __version__
from minimf.backend import make_rng, to_numpy
from minimf.checkpoint import CheckpointError, restore_training_state, save, training_state
from minimf.datasets.augment import augment_batch
from minimf.files import atomic_write_json
from minimf.progress import progress_bar
from minimf.run_folder import remove_leftovers, write_checkpoint
from minimf.training.curves import draw_run_curve, write_step_losses
from minimf.training.records import evaluate
from minimf.training.trainers import Sequential


class TrainingDiverged(RuntimeError):
    """A loss or a parameter became NaN or infinite."""


# the exit status of a command stopped by a signal: 128 + the signal's number, as a shell reports it
EXIT_INTERRUPTED = {"SIGINT": 130, "SIGTERM": 143}


class Interrupted(RuntimeError):
    """Ctrl-C or SIGTERM stopped the run between two steps (with ``out``, after a checkpoint at that step)."""

    def __init__(self, epoch, step, signal_name="SIGINT"):
        super().__init__(f"interrupted at epoch {epoch}, step {step}")
        self.epoch, self.step, self.signal_name = epoch, step, signal_name
        self.old_run_back = False     # train_run: the run an --overwrite replaced was put back instead


@contextlib.contextmanager
def sigterm_stops():
    """Within the block, SIGTERM stops at once, as Ctrl-C does: Interrupted is raised wherever the
    program is (between an experiment's trainings; inside a training ``fit``'s StopRequest takes the
    signal instead, and the training stops at the end of its step). Main thread only."""
    def stop(signum, frame):
        raise Interrupted(0, 0, "SIGTERM")
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM during training sets ``requested``: no further batch is handed out,
    the steps already handed out finish (the pipeline drains), and the run stops at a step boundary,
    where its state is whole. A second Ctrl-C stops at once; a further SIGTERM changes nothing (a
    scheduler may repeat it, an experiment passes its stop on to workers that had it already: the
    stop under way still ends with its checkpoint). Only the main thread can take signals; elsewhere
    this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = None      # the name of the signal that asked to stop
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False

    def _handle(self, signum, frame):
        if self.requested:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt        # Ctrl-C again: at once
            return
        self.requested = signal.Signals(signum).name
        cause = "" if signum == signal.SIGINT else f"{self.requested}: "
        print(f"\n{cause}stopping after the current step (Ctrl-C again to stop at once)", file=sys.stderr)


@dataclass
class Progress:
    """Where a run is: ``epoch`` (counted from 1) and ``step`` (steps finished in it), the records of
    the finished epochs, this epoch's losses so far (a (step, L) host array, or None), the batch
    order's random state before this epoch's order was drawn, and the per-step losses of the epoch
    that finished last (for losses.json, which is written after the checkpoint at the epoch's end)."""
    epoch: int = 1
    step: int = 0
    history: list = field(default_factory=list)
    losses: object = None
    order_state: dict = None
    finished_losses: object = None


def fit(net, data, *, epochs, batch_size=256, seed=0, schedule=None, augment=None, trainer=None, predict="bp",
        progress=True, on_epoch=None, out=None, checkpoint_every=None, config=None, resume=None, run_id=None,
        after_files=None):
    """Train ``net`` on ``data`` for ``epochs`` epochs; return the list of per-epoch records.

    net: any minimf network. data: {"train": (x, y), "test": (x, y), "validation": (x, y) or None}
    as ``minimf.training.prepare_data`` makes them (values checked once). batch_size: examples per
    step (the last batch of an epoch may be smaller). seed: the batch order (and the crops and flips).
    schedule: a learning-rate schedule (minimf/nn/schedules.py) that every optimiser of ``net`` takes
    for the whole run, or None to keep theirs. augment: None, or the (C, H, W) shape of one image:
    every training batch is then randomly cropped and flipped (minimf/datasets/augment.py).
    trainer: who takes the steps (minimf/training/trainers.py; default ``net.train_step``), or a
    context manager that gives one: it is entered after the network's state is restored and its
    schedule set (the Ray pipeline copies both into its actors when it starts).
    predict: the mode of the headline ``test_acc`` (minimf/training/records.py). progress: a
    progress bar per epoch. on_epoch: called with every epoch's record (the command line prints it).
    out: a run folder for model.npz, metrics.json and checkpoints (every epoch and every
    ``checkpoint_every`` steps), ``config`` (JSON-ready) and ``run_id`` (the run's identity, which
    also names its temporary files; minimf/run_folder.py) stored in each checkpoint;
    ``after_files(history)`` is called once an epoch's files are written. resume: (arrays, info,
    folder) of a checkpoint of this run to continue from (``run_folder.latest_checkpoint``).

    Each record: ``epoch``, the accuracies of ``evaluate``, ``seconds`` and ``train_loss`` (one mean
    per layer for MF and FF, one number for the others).
    """
    x_train = data["train"][0]
    order_rng = make_rng(seed)                                     # the batch order
    # a second stream for the crops and flips, so that augmenting leaves the batch order unchanged
    augment_rng = make_rng([seed, 1]) if augment else None
    steps_per_epoch = math.ceil(x_train.shape[0] / batch_size)
    if schedule is not None:
        for optimizer in net.optimizers:
            optimizer.schedule = schedule
    state = Progress() if resume is None else restore(net, resume, order_rng, augment_rng, steps_per_epoch)
    saver = Checkpointer(net, Path(out), config, augment_rng, run_id) if out is not None else None
    if saver and resume is not None and state.step == 0 and state.history:
        saver.write_epoch_files(state.history, state.finished_losses)   # a kill may have come before these
    with StopRequest() as stop, as_context(trainer or Sequential(net)) as steps:
        epoch_loop = EpochLoop(net, data["train"], batch_size, steps, augment, augment_rng, progress, saver,
                               checkpoint_every)
        while state.epoch <= epochs:
            epoch, start = state.epoch, time.perf_counter()
            state.order_state = order_rng.bit_generator.state         # before this epoch's order is drawn
            train_loss = epoch_loop.run(state, order_rng, stop)
            record = {"epoch": epoch, **evaluate(net, data, predict),
                      "seconds": round(time.perf_counter() - start, 3), "train_loss": train_loss}
            state = Progress(epoch + 1, 0, state.history + [record], None, order_rng.bit_generator.state,
                             finished_losses=state.losses)
            if on_epoch is not None:
                on_epoch(record)
            if saver:
                saver.save(state)
                saver.write_epoch_files(state.history, state.finished_losses)
                if after_files is not None:
                    after_files(state.history)
    return state.history


def as_context(trainer):
    """``trainer`` itself if it is a context manager, else one that gives it."""
    return trainer if hasattr(trainer, "__enter__") else contextlib.nullcontext(trainer)


class EpochLoop:
    """One epoch's steps, in chunks that end at every ``checkpoint_every`` boundary (a checkpoint is
    written there) or when a signal asks to stop."""

    def __init__(self, net, train, batch_size, trainer, augment, augment_rng, progress, saver, checkpoint_every):
        self.net, (self.x, self.y), self.batch_size, self.trainer = net, train, batch_size, trainer
        self.augment, self.augment_rng, self.progress, self.saver = augment, augment_rng, progress, saver
        self.checkpoint_every = checkpoint_every

    def run(self, state, order_rng, stop):
        """The rest of epoch ``state.epoch``, from step ``state.step``: a shuffled pass over the
        training split. Returns the mean training loss (a list with one entry per layer for MF,
        and for FF one per layer followed by the one-pass read-out's)."""
        n = self.x.shape[0]
        order = self.net.xp.asarray(order_rng.permutation(n))
        starts = list(range(0, n, self.batch_size))
        bar = progress_bar(total=len(starts), initial=state.step, desc=f"epoch {state.epoch}", leave=False,
                           enabled=self.progress, unit="batch")

        def batches(chunk):          # handed out one by one; none after a stop request
            for start in chunk:
                if stop.requested:
                    return
                idx = order[start:start + self.batch_size]
                bar.update()
                x = self.x[idx]
                yield (x if self.augment_rng is None else augment_batch(x, self.augment, self.augment_rng)), self.y[idx]

        while state.step < len(starts) and not stop.requested:
            end = chunk_end(state, len(starts), self.checkpoint_every)
            step_losses = self.trainer.train(batches(starts[state.step:end]), validate=False)
            if step_losses:
                losses = losses_to_host(self.net.xp, step_losses)     # (steps, L): the chunk's one transfer
                for step, row in enumerate(losses, start=state.step + 1):
                    check_finite(row, state.epoch, step)
                check_parameters(self.net, state.epoch, state.step + len(losses))
                state.losses = losses if state.losses is None else np.concatenate([state.losses, losses])
                state.step += len(losses)
            if self.saver and state.step < len(starts) and (stop.requested or state.step == end):
                self.saver.save(state)                               # a checkpoint_every boundary, or a stop
        bar.close()
        if stop.requested:
            raise Interrupted(state.epoch, state.step, stop.requested)
        sizes = np.asarray([min(self.batch_size, n - start) for start in starts])   # the last may be smaller
        mean = (state.losses * sizes[:, None]).sum(axis=0) / n
        if self.net.LOSSES == "per_layer":
            return [round(float(v), 6) for v in mean]
        return round(float(mean[0]), 6)


def chunk_end(state, steps, every):
    """The step at which the current chunk of the epoch ends: the epoch's end, or the next step
    whose number counted over the whole run is a multiple of ``every`` (checkpoint_every)."""
    if not every:
        return steps
    done = (state.epoch - 1) * steps + state.step             # steps finished in the whole run
    return min(steps, state.step + every - done % every)


def losses_to_host(xp, step_losses):
    """Every step's losses as a (steps, L) host array, read in ONE transfer from the device.

    step_losses: one entry per step, a loss or a list of L losses (0-d arrays on the backend, or
    floats from the CPU trainers)."""
    rows = [loss if isinstance(loss, list) else [loss] for loss in step_losses]
    values = [value for row in rows for value in row]
    if all(isinstance(value, float) for value in values):      # the CPU trainers and the Ray actors' floats:
        return np.asarray(values, dtype=float).reshape(len(rows), -1)   # CuPy would refuse to stack them
    return to_numpy(xp.stack(values)).reshape(len(rows), -1)


def check_finite(losses, epoch, step):
    """Raise ``TrainingDiverged`` naming epoch, step and layer if any loss is NaN or infinite."""
    for layer, loss in enumerate(losses, start=1):
        if not math.isfinite(loss):
            where = f"layer {layer}" if len(losses) > 1 else "the output layer"
            raise TrainingDiverged(f"the training loss became {loss} at epoch {epoch}, step {step}, {where}")


def check_parameters(net, epoch, step):
    """Raise ``TrainingDiverged`` if a parameter is no longer finite after the chunk's last update
    (the losses only see the parameters before it). One reduction per parameter, one transfer."""
    xp = net.xp
    arrays = [(f"layer {i} {name}", p) for i, layer in enumerate(net.layers, start=1)
              for name, p in layer.params.items() if p is not None]
    finite = to_numpy(xp.stack([xp.isfinite(p).all() for _, p in arrays]))
    for (label, _), ok in zip(arrays, finite):
        if not ok:
            raise TrainingDiverged(f"{label} is no longer finite after epoch {epoch}, step {step}")


class Checkpointer:
    """Writes a run's files into ``out``: its checkpoints (the network's whole training state, the
    augmentation's random state, and ``Progress``, which holds the batch order's) and, after every
    epoch, model.npz and metrics.json."""

    def __init__(self, net, out, config, augment_rng, run_id=None):
        self.net, self.out, self.config, self.augment_rng, self.run_id = net, out, config, augment_rng, run_id

    def save(self, progress):
        arrays, net_info = training_state(self.net)
        if progress.losses is not None:
            arrays["progress/epoch_losses"] = progress.losses
        if progress.finished_losses is not None:
            arrays["progress/finished_epoch_losses"] = progress.finished_losses
        info = {"epoch": progress.epoch, "step": progress.step, "history": progress.history,
                "order_rng": progress.order_state,
                "augment_rng": None if self.augment_rng is None else self.augment_rng.bit_generator.state,
                "net": net_info, "config": self.config, "run_id": self.run_id, "minimf_version": __version__,
                "numpy": np.__version__}
        write_checkpoint(self.out, progress.epoch, progress.step, arrays, info, self.run_id)

    def write_epoch_files(self, history, epoch_losses=None):
        """model.npz, losses.json (``epoch_losses``: the (steps, L) losses of the epoch just finished),
        then metrics.json (so that metrics.json never names an epoch whose model is missing), and
        the training curve's picture, curve.png (minimf/training/curves.py)."""
        save(self.net, self.out / "model.npz", tag=self.run_id)
        if epoch_losses is not None:
            write_step_losses(self.out, len(history), epoch_losses, self.run_id)
        atomic_write_json(self.out / "metrics.json", history, tag=self.run_id)
        draw_run_curve(self.out, self.run_id)
        remove_leftovers(self.out, self.run_id)     # of this run's writes that a kill interrupted


def restore(net, checkpoint, order_rng, augment_rng, steps_per_epoch):
    """Put a checkpoint's state back into ``net`` and the two generators; return its Progress."""
    arrays, info, folder = checkpoint
    try:
        restore_training_state(net, arrays, info["net"])     # it reads its own keys; progress/ is ours
        order_rng.bit_generator.state = info["order_rng"]
        if augment_rng is not None:
            augment_rng.bit_generator.state = info["augment_rng"]
        steps_done = (info["epoch"] - 1) * steps_per_epoch + info["step"]
        for optimizer in net.optimizers:
            if optimizer.t is None:      # a state saved before optimisers counted their steps: one per step
                optimizer.t = steps_done
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{folder}: does not fit this run's network and settings ({err})") from None
    return Progress(info["epoch"], info["step"], info["history"], arrays.get("progress/epoch_losses"),
                    info["order_rng"], arrays.get("progress/finished_epoch_losses"))
