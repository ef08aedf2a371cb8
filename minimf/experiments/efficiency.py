"""The efficiency experiments of MF v1 (arXiv 2501.09238v1): Tables 4, 5 and Figures 1-3.

    prediction   Table 4: time of one prediction (one example, one batch) and the parameters it needs
    epoch-time   Table 5: epoch time of MF and BP, mini-batch and full-batch, as a ratio from one run
    memory       Figures 1-3: memory during training (a trace over steps), peak against depth for
                 MLPs and CNNs with fitted slopes, and inside one MF step, layer by layer

All timings are interleaved (MF, BP, MF, BP, ...) and reported as medians and ratios: the machine is
shared and its seconds are noisy. The measuring code is minimf/experiments/measure.py.
"""
import statistics

from minimf.rules.backprop import BackpropCNN, BackpropNet
from minimf.datasets import DATASETS
from minimf.experiments.common import NOT_CHECKED, Report, markdown_table
from minimf.experiments.measure import (MIB, device_sync, epoch_times, line_fit, memory_meter, mf_layer_trace,
                                        prediction_methods, prediction_times, random_batch, step_peak_bytes,
                                        step_trace)
from minimf.rules.mono_forward import MonoForwardCNN, MonoForwardNet
from minimf.training import prepare_data

MNIST_IMAGE = DATASETS["mnist"].input_shape     # (1, 28, 28)
D_IN = MNIST_IMAGE[0] * MNIST_IMAGE[1] * MNIST_IMAGE[2]
PAPER_PARAMETERS = {"BP": "1,794k", "MF, BP mode": NOT_CHECKED, "MF, FF mode": "1,804k"}  # as quoted in docs/results.md
PAPER_SLOPES = {"BP": 204.00, "MF": 16.16}      # MF v1: MiB per 1000-unit layer, on a GPU
# repeats and sample sizes of the timings, per scale
# (memory_batch: examples per training step in the memory experiment; 256 is minimf.train's batch)
TIMING = {"tiny": {"batch": 50, "single": 3, "repeats": 1, "steps": 3, "memory_batch": 32},
          "quick": {"batch": 10000, "single": 100, "repeats": 3, "steps": 10, "memory_batch": 256},
          "full": {"batch": 10000, "single": 200, "repeats": 5, "steps": 20, "memory_batch": 256}}


def mnist_flat(ctx, split, n):
    """The first ``n`` (None: all) standardised, flattened MNIST examples of ``split`` as backend arrays:
    x (n, 784), y (n,)."""
    data = prepare_data("mnist", ctx.xp, data_dir=ctx.data_dir, train_subset=n, test_subset=n, progress=False)
    return data[split]


# --- Table 4 ---------------------------------------------------------------------------------------

def prediction(ctx):
    """Prediction time of BP, MF (both modes) and FF (both modes) and the parameters each needs."""
    timing = TIMING[ctx.scale.name]
    width = ctx.scale.width
    x, _ = mnist_flat(ctx, "test", timing["batch"])
    sizes = [D_IN, width, width]
    methods = prediction_methods(sizes, ctx.backend)
    report = Report("Table 4: prediction time and parameters")
    report.settings = {"network": "-".join(map(str, sizes)) + " ReLU, no biases, untrained",
                       "single": f"median of {timing['single']} one-example calls",
                       "batch": f"one call on {x.shape[0]} test images",
                       "repeats": f"{timing['repeats']} interleaved, median shown (seeds do not apply)"}
    with ctx.bar(timing["repeats"] * len(methods), "prediction") as bar:
        single, batch = prediction_times(methods, x, timing["single"], timing["repeats"], device_sync(ctx.xp),
                                         say=lambda text: bar.update(1))
    single = {k: statistics.median(v) for k, v in single.items()}
    batch = {k: statistics.median(v) for k, v in batch.items()}
    bp = methods[0]
    rows = [[m.name, f"{m.params:,}", f"{1e3 * single[m.name]:.3f}", f"{batch[m.name]:.3f}",
             f"{single[m.name] / single[bp.name]:.2f}", f"{batch[m.name] / batch[bp.name]:.2f}",
             f"{m.macs / bp.macs:.2f}", PAPER_PARAMETERS.get(m.name, NOT_CHECKED) if width == 1000 else "–"]
            for m in methods]
    header = ["method", "parameters", "single ms", f"batch s ({x.shape[0]})", "single / BP", "batch / BP",
              "multiply-adds / BP", "paper parameters"]
    report.tables.append(("Prediction time, medians", markdown_table(header, rows)))
    report.notes.append(f"Paper times (Table 4): {NOT_CHECKED}; paper parameter counts as quoted in docs/results.md.")
    report.raw = {"single_seconds": single, "batch_seconds": batch,
                  "parameters": {m.name: m.params for m in methods}, "macs": {m.name: m.macs for m in methods}}
    return report


# --- Table 5 ---------------------------------------------------------------------------------------

def epoch_time(ctx):
    """Epoch time of MF and BP (2 x width MLP), mini-batch (256) and full batch, interleaved repeats."""
    s, timing = ctx.scale, TIMING[ctx.scale.name]
    x, y = mnist_flat(ctx, "train", s.train_subset)
    n = x.shape[0]
    sizes = [D_IN, s.width, s.width]
    common = dict(sizes=sizes, num_classes=10, backend=ctx.backend, seed=ctx.seeds[0])
    nets = {"MF": MonoForwardNet(**common), "BP": BackpropNet(**common)}
    batch_sizes = {"mini-batch (256)": 256, f"full batch ({n})": n}
    report = Report("Table 5: epoch time of MF and BP")
    report.settings = {"network": "-".join(map(str, sizes)) + " ReLU", "training examples": n,
                       "repeats": f"{timing['repeats']} interleaved (MF, BP at each batch size, then again)"}
    with ctx.bar(timing["repeats"] * 2 * len(batch_sizes), "epoch-time") as bar:
        times = epoch_times(nets, x, y, batch_sizes, timing["repeats"], device_sync(ctx.xp),
                            on_epoch=lambda: bar.update(1))
    rows = []
    for b in batch_sizes:
        ratios = [mf / bp for mf, bp in zip(times[("MF", b)], times[("BP", b)])]
        rows.append([b, f"{statistics.median(times[('MF', b)]):.3f}", f"{statistics.median(times[('BP', b)]):.3f}",
                     f"{statistics.median(ratios):.2f}", f"{min(ratios):.2f}–{max(ratios):.2f}", NOT_CHECKED])
    header = ["batch", "MF s (median)", "BP s (median)", "MF / BP (median of repeats)", "range", "paper"]
    report.tables.append(("Epoch time", markdown_table(header, rows)))
    report.raw = {f"{net} {b}": v for (net, b), v in times.items()}
    return report


# --- Figures 1-3 -----------------------------------------------------------------------------------

def memory(ctx):
    """Memory of MF and BP training: a trace over steps, the peak against depth (MLP and CNN), one MF step."""
    s, timing = ctx.scale, TIMING[ctx.scale.name]
    meter_kind = "tracemalloc (host)" if ctx.backend == "numpy" else "CuPy pool hook (GPU)"
    report = Report("Figures 1-3: memory during training, MF against BP")
    cnn_depths = list(range(1, len(s.channels) + 1))
    batch = timing["memory_batch"]
    report.settings = {"meter": meter_kind, "batch": batch, "MLP width": s.width, "MLP depths": list(s.depths),
                       "CNN channels": list(s.channels), "data": "random standard-normal batches of MNIST's shape",
                       "seeds": "not used (allocation sizes do not depend on values)"}
    with ctx.bar(3 + 2 * len(s.depths) + 2 * len(cnn_depths), "memory") as bar, memory_meter(ctx.xp) as meter:
        mlp = depth_sweep(ctx, meter, bar, "mlp", s.depths, batch)
        cnn = depth_sweep(ctx, meter, bar, "cnn", cnn_depths, batch)
        x, y = random_batch(batch, (D_IN,), xp=ctx.xp)
        deep = [D_IN] + [s.width] * max(s.depths)
        trace = {}
        for rule, kind in (("MF", MonoForwardNet), ("BP", BackpropNet)):
            trace[rule] = step_trace(lambda: kind(sizes=deep, backend=ctx.backend), x, y, timing["steps"], meter)
            bar.update(1)
        layers = mf_layer_trace(MonoForwardNet(sizes=deep, backend=ctx.backend), x, y, meter)
        bar.update(1)
    report.tables.append(sweep_table(mlp, f"MLP, hidden layers of {s.width}", "hidden layers"))
    report.tables.append(sweep_table(cnn, f"CNN, the first d blocks of {'-'.join(map(str, s.channels))}", "blocks"))
    per_1000 = {r: mlp["slopes"][r] * 1000 / s.width for r in ("MF", "BP")}
    report.notes.append(
        f"MLP slopes scaled to a 1000-unit layer: MF {per_1000['MF']:.2f}, BP {per_1000['BP']:.2f} MiB per layer. "
        f"The paper reports BP {PAPER_SLOPES['BP']:.2f} and MF {PAPER_SLOPES['MF']:.2f} MiB per 1000-unit layer, "
        f"measured on a GPU by its own method: compare ratios and shapes, not MiB.")
    report.tables.append(("Inside one MF step (" + "-".join(map(str, deep)) + "): memory in use when each layer "
                          "starts, and its peak, MiB above the step's start",
                          markdown_table(["layer", "in use at start", "peak during the layer"],
                                         [[r["layer"], f"{r['in_use_at_start'] / MIB:.2f}", f"{r['peak'] / MIB:.2f}"]
                                          for r in layers])))
    report.notes.append(layer_trace_note(layers))
    report.tables.append((f"The first {timing['steps']} steps of a fresh " + "-".join(map(str, deep)) +
                          " network: peak during the step / in use after it, MiB above the start",
                          markdown_table(["step", "MF peak", "MF in use", "BP peak", "BP in use"],
                                         [[i + 1, *[f"{trace[r][k][i] / MIB:.2f}" for r in ("MF", "BP")
                                                    for k in ("peak", "in_use")]] for i in range(timing["steps"])])))
    report.figures = {"memory_trace": lambda ax: plot_trace(ax, trace, deep),
                      "memory_vs_depth_mlp": lambda ax: plot_sweep(ax, mlp, f"MLP, {s.width}-unit layers", "hidden layers"),
                      "memory_vs_depth_cnn": lambda ax: plot_sweep(ax, cnn, "CNN", "conv blocks")}
    report.raw = {"mlp": mlp, "cnn": cnn, "trace_bytes": trace, "mf_layer_trace_bytes": layers,
                  "meter": meter_kind}
    return report


def depth_sweep(ctx, meter, bar, arch, depths, batch):
    """Peak MiB of one step of MF and BP at every depth, and the least-squares slope of each (MiB per layer)."""
    s = ctx.scale
    if arch == "mlp":
        x, y = random_batch(batch, (D_IN,), xp=ctx.xp)
        nets = {"MF": lambda d: MonoForwardNet(sizes=[D_IN] + [s.width] * d, backend=ctx.backend),
                "BP": lambda d: BackpropNet(sizes=[D_IN] + [s.width] * d, backend=ctx.backend)}
    else:
        x, y = random_batch(batch, MNIST_IMAGE, xp=ctx.xp)
        nets = {"MF": lambda d: MonoForwardCNN(channels=s.channels[:d], backend=ctx.backend),
                "BP": lambda d: BackpropCNN(channels=s.channels[:d], backend=ctx.backend)}
    peaks = {rule: [] for rule in nets}
    for d in depths:
        for rule, make in nets.items():
            peaks[rule].append(step_peak_bytes(lambda: make(d), x, y, meter) / MIB)
            bar.update(1)
    fits = {rule: line_fit(depths, p) for rule, p in peaks.items()}
    return {"depths": list(depths), "peak_mib": peaks, "intercepts": {r: f[0] for r, f in fits.items()},
            "slopes": {r: f[1] for r, f in fits.items()}}


def sweep_table(sweep, title, depth_name):
    rows = [[d, f"{mf:.2f}", f"{bp:.2f}", f"{bp / mf:.2f}"]
            for d, mf, bp in zip(sweep["depths"], sweep["peak_mib"]["MF"], sweep["peak_mib"]["BP"])]
    rows.append(["slope (MiB per layer)", f"{sweep['slopes']['MF']:.2f}", f"{sweep['slopes']['BP']:.2f}", "–"])
    return (f"Peak memory of one training step (MiB), {title}",
            markdown_table([depth_name, "MF", "BP", "BP / MF"], rows))


def layer_trace_note(layers):
    """Does what MF holds at a layer's start grow with the layer index? Say what the numbers show.

    At the start of layer i the step holds a_(i-1) and layer i-1's gradients; from layer 3 on both have
    the same shapes in a network of equal widths (layer 1's gradients are (D, H), the others' (H, H))."""
    held = [r["in_use_at_start"] / MIB for r in layers[2:]]
    if len(held) < 2:
        return "Fewer than four layers: too few equal layers to compare inside the step."
    spread = max(held) - min(held)
    verdict = "does not grow" if spread < 0.05 * max(held) else f"varies by {spread:.2f} MiB"
    return (f"From layer 3 on, what the MF step holds when a layer starts {verdict} "
            f"({min(held):.2f}–{max(held):.2f} MiB): minimf's MonoForwardModel.train_step keeps one "
            f"layer's activations at a time (the input a_(i-1) it hands on). Beside "
            f"a_(i-1) it still holds layer i-1's gradients, which stay referenced until layer i's "
            f"local_gradients returns (one layer's gradients, not a growing amount).")


def plot_trace(ax, trace, sizes):
    for (rule, t), color in zip(trace.items(), ("C0", "C1")):
        steps = range(1, len(t["peak"]) + 1)
        ax.plot(list(steps), [v / MIB for v in t["peak"]], marker="o", color=color, label=f"{rule} peak during step")
        ax.plot(list(steps), [v / MIB for v in t["in_use"]], linestyle="--", color=color,
                label=f"{rule} in use after step")
    ax.set(xlabel="training step", ylabel="MiB above start", title="memory over steps, " + "-".join(map(str, sizes)))
    ax.legend(fontsize=8)


def plot_sweep(ax, sweep, title, depth_name):
    for rule in ("MF", "BP"):
        ax.plot(sweep["depths"], sweep["peak_mib"][rule], marker="o",
                label=f"{rule} (slope {sweep['slopes'][rule]:.2f} MiB/layer)")
    ax.set(xlabel=depth_name, ylabel="peak MiB of one step", title=title, xticks=sweep["depths"])
    ax.legend()
