"""decomposition: why Mono-Forward works, its objective against its locality, and what depth does.

    python -m minimf.experiments decomposition --quick                  # 5,000 images, 2 epochs: minutes
    python -m minimf.experiments decomposition --seeds 0 1 2 3 4 --epochs 5

MF differs from backprop (BP) in two things at once: WHAT each layer is trained on (its own projection
M_i and cross-entropy, MF v1 eqs. 5-6) and WHERE a loss's error may go (to its own layer only). The
global-credit rules (minimf/rules/global_credit.py) keep the first and change the second, so a grid
of five cells tells the two apart:

                          local credit    global credit (the summed loss backpropagated)
    MF's objective        MF              MF-global  (= deep supervision: a classifier on every layer)
    FF's objective        FF              FF-global
    one loss at the top   -               BP

Each gap to BP splits into two paired differences that add up exactly, seed by seed:

    MF - BP  =  (MF - MF-global)  +  (MF-global - BP)
             =   locality          +  objective

A locality cost that grows with depth says the depth loss comes from the error stopping at every layer;
an objective cost says MF's per-layer losses themselves are the trouble. The same for FF.

A sixth cell tries a remedy for deep MF: "MF + layer norm" (``--input-norm layer``, every layer's input
layer-normalised as DeeperForward does; see minimf/rules/mono_forward.py for why MF's upper layers start
late without it), against BP and against plain MF with the same epochs.

The grid: 784-H-...-H ReLU MLPs with 2, 4 and 8 hidden layers of the scale's width (1000 unless --tiny),
MNIST, every cell trained as minimf.train trains (common.train_rule) with the paper's setting (Adam 1e-3,
batch 256, constant rate; common.PAPER_SETTING) for the same epochs. Seed s gives every cell the same
batch order (minimf.train draws it from the seed alone) and the same initial weights where the cells
share layers: MF, MF-global and MF + layer norm start from the same W_i, b_i, M_i, and FF and FF-global
from the same W_i, b_i (the constructors draw the same numbers; tests/test_decomposition.py checks it). BP shares the first layer's
weights with MF (both draw W_1, b_1 first) and nothing else.

How each cell is scored (its test accuracy after the last epoch, in percent):

    BP                  its output layer
    MF, MF-global, +LN  the last layer's goodness ("bp" mode); the sum over layers ("ff" mode) beside it
    FF, FF-global       all labels (the goodness summed over layers, for each of the C labels written
                        into the image); the one-pass read-out beside it

and every MF and FF cell also by each layer's goodness on its own, so that a depth effect shows layer by
layer. Statistics (stats.py): per cell, the paired differences to BP over the seeds, their mean and
Student t 95% interval, and the equivalence test (TOST) at +-0.25 points; the pairs are matched by seed.
"""
import statistics
from dataclasses import asdict, dataclass

from minimf.experiments.common import Report, markdown_table, mean_std, pm, train_history
from minimf.experiments.stats import paired_interval, tost
from minimf.experiments.tune import MARGIN, compare
from minimf.experiments.workers import prefetch

DEPTHS = {"tiny": (1, 2), "quick": (2, 4, 8), "full": (2, 4, 8)}
ENOUGH_SEEDS = 5        # below this the intervals are wide (t with n - 1 degrees of freedom)


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: a row label, the rule (RunConfig.algo) and further RunConfig fields, the evaluation
    mode it is scored by ("" for a network with one accuracy) and a second mode shown beside it."""
    name: str
    algo: str
    options: dict = None
    mode: str = ""
    other: str = ""


BP = Cell("BP", "bp")
MF = Cell("MF", "mf", (), "bp", "ff")
MF_GLOBAL = Cell("MF-global", "mf", {"credit": "global"}, "bp", "ff")
FF = Cell("FF", "ff", (), "all_labels", "one_pass")
FF_GLOBAL = Cell("FF-global", "ff", {"credit": "global"}, "all_labels", "one_pass")
MF_REMEDY = Cell("MF + layer norm", "mf", {"input_norm": "layer"}, "bp", "ff")
CELLS = (BP, MF, MF_GLOBAL, FF, FF_GLOBAL, MF_REMEDY)
# (local, global) pairs whose gaps to BP are split into locality and objective
FAMILIES = ((MF, MF_GLOBAL), (FF, FF_GLOBAL))
MODE_WORDS = {"": "output", "bp": "bp mode", "ff": "ff mode", "all_labels": "all labels", "one_pass": "one pass"}


def score(record, mode):
    """The test accuracy of an epoch record in ``mode`` (minimf.train's ``test_acc_<mode>``)."""
    return record[f"test_acc_{mode}"] if mode else record["test_acc"]


# --- the runs ----------------------------------------------------------------------------------------

def cell_training(cell, width, depth, epochs, seed):
    """One cell's training: the keyword arguments of common.train_history (a plan for workers.prefetch)."""
    return dict(algo=cell.algo, hidden=[width] * depth, epochs=epochs, seed=seed, options=cell.options)


def run_grid(ctx, depths, epochs):
    """Every cell at every depth for every seed. Returns (runs, seconds): runs {depth: {cell name:
    {seed: the last epoch's record}}}, seconds the same with each run's seconds over all its epochs
    (training and the evaluation after each epoch), for sizing larger runs."""
    width, runs, seconds = ctx.scale.width, {}, {}
    prefetch(ctx, [cell_training(cell, width, depth, epochs, seed) for depth in depths for seed in ctx.seeds
                   for cell in CELLS])
    with ctx.bar(len(depths) * len(CELLS) * len(ctx.seeds), "decomposition") as bar:
        for depth in depths:
            runs[depth], seconds[depth] = {cell.name: {} for cell in CELLS}, {cell.name: {} for cell in CELLS}
            for seed in ctx.seeds:
                for cell in CELLS:
                    bar.set_postfix_str(f"{depth} layers, {cell.name}, seed {seed}")
                    history = train_history(ctx, **cell_training(cell, width, depth, epochs, seed))
                    runs[depth][cell.name][seed] = history[-1]
                    seconds[depth][cell.name][seed] = round(sum(record["seconds"] for record in history), 2)
                    bar.update(1)
    return runs, seconds


def by_seed(records, mode):
    """{seed: score} of one cell's records {seed: record}."""
    return {seed: score(record, mode) for seed, record in records.items()}


def paired(a, b):
    """Two cells' scores {seed: accuracy} as two lists in one seed order, so that pair i holds one
    seed's run of each: what stats.paired_interval and stats.tost assume. Both must have run the
    same seeds."""
    if set(a) != set(b):
        raise ValueError(f"paired cells must share their seeds: {sorted(a)} against {sorted(b)}")
    seeds = sorted(a)
    return [a[s] for s in seeds], [b[s] for s in seeds]


def scores_of(runs):
    """{depth: {cell name: {seed: score in the cell's mode}}}."""
    return {depth: {cell.name: by_seed(cells[cell.name], cell.mode) for cell in CELLS}
            for depth, cells in runs.items()}


def difference(a, b):
    """The paired difference a - b over seeds in points: "+1.23 [+0.40, +2.06]" (mean and 95% interval),
    or just the mean with one seed."""
    first, second = paired(a, b)
    if len(first) < 2:
        return f"{100 * (statistics.fmean(first) - statistics.fmean(second)):+.2f}"
    interval = paired_interval(first, second)
    return f"{100 * interval.mean:+.2f} [{100 * interval.low:+.2f}, {100 * interval.high:+.2f}]"


# --- the experiment ------------------------------------------------------------------------------------

def objective_against_locality(ctx):
    s = ctx.scale
    depths, epochs = DEPTHS[s.name], ctx.epochs_or(s.epochs)
    report = Report("Why Mono-Forward works: its objective against its locality, and depth (MNIST MLP)")
    report.settings = {
        "networks": ", ".join(f"{d} x {s.width}" for d in depths) + " ReLU",
        "cells": ", ".join(cell.name for cell in CELLS), "epochs": epochs,
        "training": "the paper's setting (Adam 1e-3, batch 256, constant rate), the same for every cell",
        "train/test examples": f"{s.train_subset or 60000}/{s.test_subset or 10000}",
        "equivalence margin": f"±{100 * MARGIN:g} points"}
    runs, seconds = run_grid(ctx, depths, epochs)
    scores = scores_of(runs)
    report.tables += [accuracy_table(ctx, runs, scores), decomposition_table(scores),
                      layer_table(ctx, runs)]
    report.notes += notes(ctx, scores)
    deepest = max(depths)
    report.figures = {"layers": lambda ax: plot_layers(ax, runs[deepest], deepest, s.width)}
    report.raw = {"runs": runs, "scores": scores, "seconds": seconds, "cells": [asdict(cell) for cell in CELLS],
                  "seeds": ctx.seeds, "margin": MARGIN,
                  "paired_to_bp": {depth: {cell.name: paired_record(scores[depth][cell.name], scores[depth]["BP"])
                                           for cell in CELLS if cell is not BP} for depth in depths}}
    return report


def paired_record(a, b):
    """The paired comparison a - b as numbers for results.json (None with one seed)."""
    first, second = paired(a, b)
    if len(first) < 2:
        return None
    interval = paired_interval(first, second)
    return {"mean": interval.mean, "low": interval.low, "high": interval.high,
            "verdict": tost(first, second, MARGIN).verdict}


def accuracy_table(ctx, runs, scores):
    """Every cell's accuracy, the other mode beside it, and its paired difference to BP with TOST."""
    rows = []
    for depth, cells in runs.items():
        for cell in CELLS:
            other = (f"{MODE_WORDS[cell.other]} {pm([score(r, cell.other) for r in cells[cell.name].values()])}"
                     if cell.other else "")
            head = [f"{depth} x {ctx.scale.width}", cell.name, MODE_WORDS[cell.mode],
                    pm(list(scores[depth][cell.name].values())), other]
            if cell is BP:
                rows.append(head + ["", "", "", "", ""])
            else:
                rows.append(head + compare("", *paired(scores[depth][cell.name], scores[depth]["BP"]))[1:])
    header = ["network", "cell", "scored by", "test %", "other mode, %", "cell - BP (points)", "95% interval",
              "90% interval", "TOST p (lower, upper)", f"verdict at ±{100 * MARGIN:g} points"]
    return (f"Test accuracy (%), mean ± std over seeds {' '.join(map(str, ctx.seeds))}, and the paired "
            f"difference to BP (stats.py: Student t over seeds; TOST)", markdown_table(header, rows))


def decomposition_table(scores):
    """Each gap to BP split into locality and objective, and the remedy against plain MF: paired, in points."""
    rows = []
    for depth, cells in scores.items():
        row = [depth]
        for local, glob in FAMILIES:
            row += [difference(cells[local.name], cells["BP"]), difference(cells[local.name], cells[glob.name]),
                    difference(cells[glob.name], cells["BP"])]
        rows.append(row + [difference(cells[MF_REMEDY.name], cells[MF.name])])
    header = ["hidden layers", "MF - BP", "locality: MF - MF-global", "objective: MF-global - BP",
              "FF - BP", "locality: FF - FF-global", "objective: FF-global - BP",
              "remedy: (MF + layer norm) - MF"]
    return ("Where the gap to BP comes from: paired differences in points, mean [95% interval]; "
            "locality + objective = the gap, seed by seed", markdown_table(header, rows))


def layer_table(ctx, runs):
    """Each layer's own accuracy (its goodness alone) for the MF and FF cells."""
    deepest = max(runs)
    rows = []
    for depth, cells in runs.items():
        for cell in CELLS:
            records = list(cells[cell.name].values())
            if "layer_test_acc" not in records[0]:
                continue
            layers = [pm([r["layer_test_acc"][i] for r in records]) for i in range(depth)]
            rows.append([f"{depth} x {ctx.scale.width}", cell.name, *layers, *["–"] * (deepest - depth)])
    header = ["network", "cell", *[f"layer {i + 1}" for i in range(deepest)]]
    return ("Each layer on its own: test accuracy (%) of its goodness alone (MF: argmax G_i; FF: all labels "
            "with layer i's goodness), mean ± std", markdown_table(header, rows))


def notes(ctx, scores):
    lines = ["Scored by: BP its output; the MF cells the last layer's goodness (bp mode), with the sum over "
             "layers (ff mode) beside it; the FF cells all labels (C passes), with the one-pass read-out beside "
             "it. The paired differences and the equivalence test use the scored accuracy.",
             "Same seeds for every cell: seed s gives every cell the same batch order, MF, MF-global and MF + "
             "layer norm the same initial weights, FF and FF-global the same initial weights (and the same "
             "negative labels' stream)."]
    if len(ctx.seeds) < 2:
        return lines + ["One seed: no paired interval (it needs a spread over seeds)."]
    if len(ctx.seeds) < ENOUGH_SEEDS:
        lines.append(f"{len(ctx.seeds)} seeds: the intervals are wide (t with {len(ctx.seeds) - 1} degrees of "
                     f"freedom); --seeds 0 1 2 3 4 or more to show equivalence at ±{100 * MARGIN:g} points.")
    for depth, cells in scores.items():
        said = [f"{local.name}'s locality {shown(cells[local.name], cells[glob.name])}, its objective "
                f"{shown(cells[glob.name], cells['BP'])}" for local, glob in FAMILIES]
        said.append(f"the remedy against MF {shown(cells[MF_REMEDY.name], cells[MF.name])}")
        lines.append(f"{depth} hidden layer{'s' * (depth != 1)}: " + "; ".join(said) + ".")
    return lines


def shown(a, b):
    """How the paired difference a - b reads: a cost (its 95% interval below 0), a gain, or neither shown."""
    interval = paired_interval(*paired(a, b))
    points = f"{100 * interval.mean:+.2f} points [{100 * interval.low:+.2f}, {100 * interval.high:+.2f}]"
    if interval.high < 0:
        return f"costs accuracy ({points})"
    if interval.low > 0:
        return f"gains accuracy ({points})"
    return f"shows no difference ({points})"


def plot_layers(ax, cells, depth, width):
    """Each layer's accuracy against its index at the deepest depth, BP's accuracy as a line."""
    layers = list(range(1, depth + 1))
    for cell in CELLS:
        records = list(cells[cell.name].values())
        if "layer_test_acc" in records[0]:
            means = [100 * mean_std([r["layer_test_acc"][i] for r in records])[0] for i in range(depth)]
            ax.plot(layers, means, marker="o", label=cell.name)
    ax.axhline(100 * mean_std([score(r, "") for r in cells["BP"].values()])[0], color="black", linestyle="--",
               label="BP (output)")
    ax.set(xlabel="layer", ylabel="test accuracy of the layer alone (%)", title=f"{depth} x {width} MLP, MNIST",
           xticks=layers)
    ax.legend(fontsize="small")
