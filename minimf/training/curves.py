"""Training curves: every step's loss kept in a run folder, and the picture drawn from it.

    DIR/losses.json   {"1": [[L_1, ..., L_L] per step of epoch 1], "2": [...], ...}: every step's loss,
                      one number per layer for MF and FF (and FF's read-out), one for the other rules
    DIR/curve.png     the loss per step (smoothed) and the test accuracy per epoch, redrawn after every
                      epoch; several runs side by side: ``python -m minimf.plot DIR [DIR ...]``

A step's loss jumps from batch to batch, so the picture draws a moving average over a window of
about a twentieth of an epoch (``smooth``) over the raw losses in a pale line. Drawing needs
matplotlib (``pip install -e ".[lessons]"``); without it a run writes losses.json and no picture.
"""
import io
import json
import sys
from pathlib import Path

import numpy as np

from minimf.files import atomic_write_bytes, atomic_write_json

LOSSES, CURVE = "losses.json", "curve.png"


def write_step_losses(out, epoch, losses, tag=None):
    """Add epoch ``epoch``'s (steps, L) losses to ``out``/losses.json, dropping any later epoch it
    held (a resumed run writes its epochs again from where it stopped)."""
    record = {k: v for k, v in read_step_losses(out).items() if int(k) < epoch}
    record[str(epoch)] = np.round(np.asarray(losses, dtype=float), 6).tolist()
    atomic_write_json(Path(out) / LOSSES, record, tag=tag)


def read_step_losses(folder):
    """{epoch (text): [[loss per layer] per step]} of a run folder ({} if it has none, or a damaged one)."""
    try:
        record = json.loads((Path(folder) / LOSSES).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def smooth(values, window):
    """The moving average of ``values`` (n,) over ``window`` steps (a shorter one at the start)."""
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def run_curve(folder):
    """(steps per epoch, (total steps, L) losses, metrics records) of a run folder."""
    by_epoch = read_step_losses(folder)
    epochs = sorted(by_epoch, key=int)
    losses = [row for e in epochs for row in by_epoch[e]]
    metrics = json.loads((Path(folder) / "metrics.json").read_text())
    steps = len(by_epoch[epochs[0]]) if epochs else 1
    return steps, np.asarray(losses, dtype=float).reshape(len(losses), -1), metrics


def draw(folders, labels=None):
    """A figure of the runs in ``folders``: the smoothed training loss against epochs (every layer
    for one run; the last layer of each for several) and the test accuracy after each epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = labels or [Path(f).name for f in folders]
    for n, (folder, label) in enumerate(zip(folders, labels)):
        steps, losses, metrics = run_curve(folder)
        color = f"C{n}"
        layers = range(losses.shape[1]) if len(folders) == 1 else [losses.shape[1] - 1]
        for k, layer in enumerate(layers):
            x = np.arange(1, losses.shape[0] + 1) / steps
            shade = color if len(folders) > 1 else f"C{k}"
            name = f"{label}" if len(folders) > 1 else (f"layer {layer + 1}" if losses.shape[1] > 1 else "loss")
            left.plot(x, losses[:, layer], color=shade, alpha=0.15, linewidth=0.8)
            left.plot(x, smooth(losses[:, layer], max(1, steps // 20)), color=shade, label=name)
        epochs = [r["epoch"] for r in metrics]
        right.plot(epochs, [100 * r["test_acc"] for r in metrics], "o-", color=color, label=label)
    left.set(xlabel="epoch", ylabel="training loss (smoothed)", title="loss per step")
    right.set(xlabel="epoch", ylabel="test accuracy (%)", title="after each epoch")
    right.xaxis.get_major_locator().set_params(integer=True)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def figure_png(fig):
    """The figure as PNG bytes (and closed)."""
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


_WARNED = []


def draw_run_curve(out, tag=None):
    """Redraw ``out``/curve.png from the run's files. A picture is a courtesy: without matplotlib, or
    if drawing fails, the run goes on (one note on stderr)."""
    try:
        atomic_write_bytes(Path(out) / CURVE, figure_png(draw([out])), tag)
    except ImportError:
        note(f"note: no {CURVE}: matplotlib is not installed (pip install -e \".[lessons]\")")
    except (ValueError, KeyError, OSError) as err:
        note(f"note: no {CURVE}: {err}")


def note(message):
    if not _WARNED:
        _WARNED.append(message)
        print(message, file=sys.stderr)
