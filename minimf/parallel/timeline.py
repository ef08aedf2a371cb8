"""When each layer trained each batch: the picture of "no backward locking".

The pipelines (threads: minimf/parallel/pipeline.py; Ray actors: minimf/parallel/ray_pipeline.py)
can record, for every layer and batch, when the layer's step began and ended (wall-clock seconds,
``time.time()``, so that events from several processes on one machine line up; on a cluster the
machines' clocks must agree to well under a step). ``python -m minimf.train --pipeline
--timeline FILE`` writes them as JSON:

    {"layers": L, "events": [[layer, batch, start, end], ...]}   times in seconds from the first start

and ``plot(FILE)`` (or ``python -m minimf.parallel.timeline FILE --png OUT``) draws them as a Gantt
chart: one row per layer, one bar per batch. In backprop every layer would wait for the backward
pass of the layers above; here layer i+1's bar for batch t sits beside layer i's bar for batch t+1.
"""
import argparse
import threading
import time

from minimf.files import atomic_write_json


class Timeline:
    """Events (layer, batch, start, end) added from any thread; ``batch`` counts each layer's
    batches from 0 over the whole run."""

    def __init__(self, layers):
        self.layers = layers
        self.events = []
        self._lock = threading.Lock()
        self._counts = [0] * layers

    def add(self, layer, start, end):
        """One step of ``layer`` that ran from ``start`` to ``end`` (``time.time()`` seconds)."""
        with self._lock:
            self.events.append([layer, self._counts[layer], start, end])
            self._counts[layer] += 1

    def add_all(self, layer, spans):
        for start, end in spans:
            self.add(layer, start, end)

    def as_dict(self):
        """{"layers": L, "events": [[layer, batch, start, end], ...]}, times from the first start."""
        origin = min((e[2] for e in self.events), default=0.0)
        events = sorted([layer, batch, round(s - origin, 6), round(e - origin, 6)]
                        for layer, batch, s, e in self.events)
        return {"layers": self.layers, "events": events}

    def save(self, path):
        atomic_write_json(path, self.as_dict())


def now():
    return time.time()


def busy_fraction(timeline):
    """Per layer, the fraction of the span from the first start to the last end that it was busy."""
    events = timeline["events"]
    if not events:
        return []
    span = max(e[3] for e in events) - min(e[2] for e in events)
    busy = [0.0] * timeline["layers"]
    for layer, _, start, end in events:
        busy[layer] += end - start
    return [b / span if span else 0.0 for b in busy]


def plot(timeline, ax=None, max_batches=None):
    """A Gantt chart of ``timeline`` (the dict of ``Timeline.as_dict`` or a JSON file's path) on the
    matplotlib axes ``ax`` (new ones if None); returns the axes."""
    import json
    from pathlib import Path
    if isinstance(timeline, (str, Path)):
        timeline = json.loads(Path(timeline).read_text())
    if ax is None:
        import matplotlib.pyplot as plt
        ax = plt.subplots(figsize=(10, 1 + 0.5 * timeline["layers"]))[1]
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    for layer, batch, start, end in timeline["events"]:
        if max_batches is None or batch < max_batches:
            ax.barh(layer, end - start, left=start, height=0.8, color=colours[batch % len(colours)],
                    edgecolor="black", linewidth=0.3)
            ax.text((start + end) / 2, layer, str(batch), ha="center", va="center", fontsize=6)
    ax.set_yticks(range(timeline["layers"]), [f"layer {i + 1}" for i in range(timeline["layers"])])
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title("when each layer trained each batch (the number in a bar is the batch)")
    return ax


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minimf.parallel.timeline",
                                description="Draw a pipeline's timeline (--timeline FILE) as a Gantt chart.")
    p.add_argument("file", help="the JSON file written by python -m minimf.train --timeline")
    p.add_argument("--png", default=None, help="write the chart here (default: FILE with .png)")
    p.add_argument("--batches", type=int, default=None, help="only the first N batches")
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    ax = plot(args.file, max_batches=args.batches)
    out = args.png or str(args.file).rsplit(".", 1)[0] + ".png"
    ax.figure.tight_layout()
    ax.figure.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
