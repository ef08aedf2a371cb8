"""mixer: MF v2's Mixer comparison (arXiv 2501.09238v2), as far as this machine allows: Mono-Forward (MF)
and backprop (BP) MLP-Mixers, their accuracy with settings chosen on a validation split, and the memory
of one training step against depth.

    python -m minimf.experiments mixer --quick              # MNIST, a small Mixer, CPU minutes
    python -m minimf.experiments mixer --seeds 0 1 2 3 4    # the default Mixer, the whole data sets

1. The search (tune.py's pieces: ``draw_settings``, ``search``, ``choose``, ``Settings``; the data:
   common.search_data). MIXER_SEARCH's trials are drawn from the search seed (the first of --seeds):
   learning rate log-uniform in [1e-4, 1e-2],
   schedule constant or cosine, epochs from the scale's list (--epochs E fixes it). MF and BP train
   with the same drawn settings, trial by trial (the same budget), on the training split less the
   held-out validation images, and each rule's choice is its trial with the best accuracy on them.
   The test images are not in a trial's data.
2. The final runs: each rule's choice on the whole training split (of the scale), one run per seed;
   test accuracy mean +- std, and MF - BP paired by seed (decomposition.paired): the mean, Student t
   95% interval and the equivalence test (TOST) at +-0.25 points, as ``experiments decomposition``
   reports them. MF is scored as minimf.train scores it (the last block's goodness, "bp" mode); its
   "ff" mode and each block's own accuracy are beside it.
3. The memory: the allocator's peak of one training step (resident parameters and optimiser state
   plus the step's peak above them: measure.mixer_step_memory, the measurement of
   benchmarks/mixer_memory.py) of MF and BP Mixers of the same sizes at several depths, and the ratio
   MF/BP beside MF v2's 31%; and of the 2 x 1000 MLP on MNIST (measure.mlp_step_memory), where MF's
   advantage vanishes. A plot draws the Mixers' totals against depth with the ratio.

Data sets: MNIST (packaged), with 4 x 4 patches (S = 49); and PathMNIST (3 x 28 x 28, 9 classes),
MF v2's Mixer benchmark, where its file sits in the data directory (it is placed there by hand,
``python -m minimf.datasets download pathmnist`` says where to get it): nothing is downloaded.

Sizes (MIXERS): tiny for the tests (seconds), quick for a CPU (a 2-block Mixer of width 32, 5,000
training images), full the command line's default Mixer (4 blocks of width 128) on the whole data sets.
MF v2's own Mixer sizes, batch and memory meter could not be read, so the figures here answer "how does
MF compare on a Mixer of this size", not "does v2's table reproduce".
"""
from dataclasses import asdict, dataclass

from minimf.datasets import DATASETS, num_classes
from minimf.experiments.common import Report, image_datasets_present, markdown_table, pm, train_history
from minimf.experiments.decomposition import ENOUGH_SEEDS, paired, paired_record
from minimf.experiments.measure import MIB, MLP_2X1000, memory_meter, mixer_step_memory, mlp_step_memory
from minimf.experiments.tune import (LR_RANGE, MARGIN, SCHEDULES, SEARCH, SearchScale, choose, compare,
                                    draw_settings, search, settings_of)
from minimf.experiments.workers import prefetch
from minimf.training.config import DEFAULT_MIXER

RULES = ("mf", "bp")
DATASETS_TRIED = ("mnist", "pathmnist")       # PathMNIST where its file is present
CLAIM = 0.31                                  # MF v2: MF needs 31% of BP's memory on MLP-Mixers
MLP_LABEL = "MLP " + "-".join(map(str, MLP_2X1000))

MIXERS = {"tiny": dict(patch=4, width=8, token_hidden=8, channel_hidden=16, depth=2),
          "quick": dict(patch=4, width=32, token_hidden=16, channel_hidden=64, depth=2),
          "full": dict(DEFAULT_MIXER)}
MIXER_SEARCH = {"tiny": SearchScale(2, 256, (1,)),
                "quick": SearchScale(4, 1000, (1, 2, 3)),
                "full": SEARCH["full"]}


@dataclass(frozen=True)
class MemoryScale:
    """The memory figure at one scale: the depths measured and the examples in the step's batch."""
    depths: tuple
    batch_size: int


MEMORY = {"tiny": MemoryScale((1, 2), 8), "quick": MemoryScale((2, 4, 8, 16), 64),
          "full": MemoryScale((2, 4, 8, 16), 128)}


def datasets_here(ctx):
    """MNIST, and PathMNIST where its file is in the data directory (never downloaded)."""
    present = image_datasets_present(ctx.data_dir)
    return [name for name in DATASETS_TRIED if name == "mnist" or name in present]


def mixer_sizes(ctx):
    """The Mixer's sizes at this scale: patch, width, token_hidden, channel_hidden, depth."""
    return dict(MIXERS[ctx.scale.name])


# --- 1. one trial, and one final run ---------------------------------------------------------------

def mixer_training(ctx, algo, dataset, settings, seed, held_out=None):
    """One Mixer training as ``python -m minimf.train --arch mixer`` trains it, with ``settings``
    (tune.Settings), on the search's data where ``held_out`` = (V, s) (common.search_data): the keyword
    arguments of common.train_history (a plan for workers.prefetch)."""
    return dict(algo=algo, dataset=dataset, arch="mixer", epochs=settings.epochs, seed=seed,
                options={**mixer_sizes(ctx), **settings.options()}, held_out=held_out)


def train_mixer(ctx, algo, dataset, settings, seed, held_out=None):
    """The last epoch's record of ``mixer_training``."""
    return train_history(ctx, **mixer_training(ctx, algo, dataset, settings, seed, held_out))[-1]


# --- 2. the final runs -----------------------------------------------------------------------------

def final_runs(ctx, bar, dataset, chosen):
    """Each rule's chosen settings, one run per seed on the whole training split of the scale:
    {rule: {seed: the last epoch's record}}."""
    prefetch(ctx, [mixer_training(ctx, algo, dataset, settings_of(chosen[algo]), seed)
                   for algo in RULES for seed in ctx.seeds])
    runs = {}
    for algo in RULES:
        runs[algo] = {}
        for seed in ctx.seeds:
            bar.set_postfix_str(f"{dataset} {algo} final seed {seed}")
            runs[algo][seed] = train_mixer(ctx, algo, dataset, settings_of(chosen[algo]), seed)
            bar.update(1)
    return runs


def scores_by_seed(records):
    """{seed: test accuracy} (MF: bp mode, minimf.train's headline)."""
    return {seed: record["test_acc"] for seed, record in records.items()}


# --- 3. the memory -----------------------------------------------------------------------------------

def step_memory(ctx, dataset, sizes):
    """measure.mixer_step_memory at this scale's depths and batch, the Mixer's other sizes, and
    measure.mlp_step_memory of the 2 x 1000 MLP on MNIST at the same batch: ({depth: {"MF": {...},
    "BP": {...}}}, {"MF": {...}, "BP": {...}}) with resident, step peak and total in MiB, and the
    parameters."""
    scale = MEMORY[ctx.scale.name]
    other = {k: v for k, v in sizes.items() if k != "depth"}
    with memory_meter(ctx.xp) as meter:
        mixers = mixer_step_memory(ctx.xp, DATASETS[dataset].input_shape, num_classes(dataset), scale.depths, other,
                                   scale.batch_size, meter, seed=ctx.seeds[0])
        mlp = mlp_step_memory(ctx.xp, scale.batch_size, meter, seed=ctx.seeds[0])
    return {depth: in_mib(pair) for depth, pair in mixers.items()}, in_mib(mlp)


def in_mib(pair):
    """measure_pair's {"MF": (resident, step, parameters), "BP": ...} in bytes -> MiB in a dict per rule."""
    return {rule: {"resident_mib": resident / MIB, "step_peak_mib": step / MIB,
                   "total_mib": (resident + step) / MIB, "parameters": int(parameters)}
            for rule, (resident, step, parameters) in pair.items()}


def memory_row(network, m):
    """One row of the memory table: parameters, step peaks, totals and the ratios MF/BP."""
    return [network, f"{m['MF']['parameters'] / 1e6:.3f}", f"{m['BP']['parameters'] / 1e6:.3f}",
            f"{m['MF']['step_peak_mib']:.2f}", f"{m['BP']['step_peak_mib']:.2f}",
            f"{m['MF']['step_peak_mib'] / m['BP']['step_peak_mib']:.0%}",
            f"{m['MF']['total_mib']:.2f}", f"{m['BP']['total_mib']:.2f}",
            f"{m['MF']['total_mib'] / m['BP']['total_mib']:.0%}"]


def memory_table(memory, mlp, batch_size):
    rows = [memory_row(f"Mixer, depth {depth}", m) for depth, m in memory.items()] + [memory_row(MLP_LABEL, mlp)]
    header = ["network", "MF params (M)", "BP params (M)", "MF step peak MiB", "BP step peak MiB", "step MF/BP",
              "MF total MiB", "BP total MiB", f"total MF/BP (v2: {CLAIM:.0%})"]
    return (f"Memory of one training step (allocator's peak; batch {batch_size}; total = parameters and "
            f"optimiser state + the step's peak)", markdown_table(header, rows))


def plot_memory(ax, memory, title):
    """Total step memory against depth for MF and BP (MiB, left axis) and MF/BP (right axis)."""
    depths = list(memory)
    for rule, marker in (("MF", "o"), ("BP", "s")):
        ax.plot(depths, [memory[d][rule]["total_mib"] for d in depths], marker=marker, label=rule)
    ax.set(xlabel="depth (Mixer blocks)", ylabel="allocator's peak of one step (MiB)", title=title, xticks=depths,
           ylim=(0, None))
    ratio, ratios = ax.twinx(), [memory[d]["MF"]["total_mib"] / memory[d]["BP"]["total_mib"] for d in depths]
    ratio.plot(depths, ratios, color="gray", linestyle="--", marker=".", label="MF/BP")
    ratio.axhline(CLAIM, color="red", linestyle=":", label=f"MF v2's {CLAIM:.0%}")
    ratio.set(ylabel="MF/BP", ylim=(0, max(1.1, 1.05 * max(ratios))))
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = ratio.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, fontsize="small", loc="center left")


# --- the experiment ---------------------------------------------------------------------------------

def mixer_comparison(ctx):
    s, space, sizes = ctx.scale, MIXER_SEARCH[ctx.scale.name], mixer_sizes(ctx)
    seed, datasets = ctx.seeds[0], datasets_here(ctx)
    epochs = (ctx.epochs,) if ctx.epochs is not None else space.epochs
    report = Report("Mono-Forward against backprop on MLP-Mixers: accuracy (settings chosen on validation) "
                    "and the memory of a step")
    report.settings = {
        "Mixer": f"{sizes['patch']} x {sizes['patch']} patches, width {sizes['width']}, token hidden "
                 f"{sizes['token_hidden']}, channel hidden {sizes['channel_hidden']}, depth {sizes['depth']}",
        "data sets": " ".join(datasets), "rules": " ".join(RULES),
        "search": f"random, {space.trials} trials per rule (the same settings for both rules), seed {seed}",
        "space": f"lr log-uniform in [{LR_RANGE[0]:g}, {LR_RANGE[1]:g}], schedule {' or '.join(SCHEDULES)}, "
                 f"epochs {' or '.join(map(str, epochs))}",
        "validation": f"{space.validation} images held out of the training split",
        "final runs": f"train {s.train_subset or 'all'}/test {s.test_subset or 'all'} examples, seeds "
                      f"{' '.join(map(str, ctx.seeds))}",
        "equivalence margin": f"±{100 * MARGIN:g} points"}
    candidates = draw_settings(space.trials, epochs, seed)
    raw = {"sizes": sizes, "seeds": ctx.seeds, "margin": MARGIN, "candidates": [asdict(c) for c in candidates],
           "datasets": {}}
    with ctx.bar(len(datasets) * len(RULES) * (space.trials + len(ctx.seeds)), "mixer") as bar:
        for dataset in datasets:
            held_out = (space.validation, seed)
            prefetch(ctx, [mixer_training(ctx, algo, dataset, settings, seed, held_out)
                           for algo in RULES for settings in candidates])
            trials = search(bar, RULES, candidates,
                            lambda algo, settings: train_mixer(ctx, algo, dataset, settings, seed, held_out)["test_acc"],
                            label=f"{dataset} ")
            chosen = {algo: choose(trials[algo]) for algo in RULES}
            runs = final_runs(ctx, bar, dataset, chosen)
            scores = {algo: scores_by_seed(runs[algo]) for algo in RULES}
            raw["datasets"][dataset] = {"trials": trials, "chosen": chosen, "runs": runs, "scores": scores,
                                        "mf_minus_bp": paired_record(scores["mf"], scores["bp"])}
            report.tables += accuracy_tables(ctx, dataset, candidates, trials, chosen, runs, scores)
    memory_on = "pathmnist" if "pathmnist" in datasets else "mnist"
    try:
        memory, mlp = step_memory(ctx, memory_on, sizes)
    except ValueError as err:          # the CPU stand-in for CuPy has no memory pool to measure
        memory, mlp, report.notes = None, None, report.notes + [f"No memory figure: {err}."]
    if memory:
        raw["memory"] = {"dataset": memory_on, "batch_size": MEMORY[s.name].batch_size, "by_depth": memory,
                         "mlp_sizes": list(MLP_2X1000), "mlp": mlp}
        report.tables.append(memory_table(memory, mlp, MEMORY[s.name].batch_size))
        report.figures = {"mixer_memory": lambda ax: plot_memory(
            ax, memory, f"MLP-Mixer, {memory_on} images, width {sizes['width']}, "
                        f"batch {MEMORY[s.name].batch_size}")}
    report.notes += notes(ctx, datasets, memory, mlp)
    report.raw = raw
    return report


def accuracy_tables(ctx, dataset, candidates, trials, chosen, runs, scores):
    rows = [[number, f"{c.lr:.3g}", c.schedule, c.epochs,
             *[mark(trials[algo][number - 1], chosen[algo]) for algo in RULES]]
            for number, c in enumerate(candidates, start=1)]
    trial_table = markdown_table(["trial", "lr", "schedule", "epochs", "MF val %", "BP val %"], rows)
    mf = list(runs["mf"].values())
    final_rows = [["MF", settings_of(chosen["mf"]), pm(list(scores["mf"].values())),
                   pm([r["test_acc_ff"] for r in mf]),
                   ", ".join(pm([r["layer_test_acc"][i] for r in mf]) for i in range(len(mf[0]["layer_test_acc"])))],
                  ["BP", settings_of(chosen["bp"]), pm(list(scores["bp"].values())), "", ""]]
    comparison = compare("MF - BP", *paired(scores["mf"], scores["bp"]))
    header = ["paired over seeds", "mean (points)", "95% interval", "90% interval", "TOST p (lower, upper)",
              f"verdict at ±{100 * MARGIN:g} points"]
    return [(f"{dataset}: every trial, validation accuracy (%), each rule's choice in bold", trial_table),
            (f"{dataset}: final runs, test accuracy (%), mean ± std over seeds {' '.join(map(str, ctx.seeds))}",
             markdown_table(["rule", "chosen settings", "test % (MF: bp mode)", "MF ff mode %",
                             "MF each block alone %"], final_rows)),
            (f"{dataset}: MF - BP paired by seed (stats.py: Student t over seeds; TOST)",
             markdown_table(header, [comparison]))]


def mark(trial, best):
    """A trial's validation accuracy in percent, bold if it is the rule's choice."""
    text = f"{100 * trial['val_acc']:.2f}"
    return f"**{text}**" if trial is best else text


def notes(ctx, datasets, memory, mlp=None):
    lines = ["The test set played no part in the choice: the trials trained and were scored on held-out "
             "training images. Seed s gives MF and BP the same batch order and the same initial trunk."]
    if "pathmnist" not in datasets:
        lines.append("PathMNIST (MF v2's Mixer benchmark) was not run: its file is not in the data directory "
                     "(python -m minimf.datasets download pathmnist says where to get it).")
    if len(ctx.seeds) < 2:
        lines.append("One seed: no paired interval (it needs a spread over seeds).")
    elif len(ctx.seeds) < ENOUGH_SEEDS:
        lines.append(f"{len(ctx.seeds)} seeds: the intervals are wide (t with {len(ctx.seeds) - 1} degrees of "
                     f"freedom); --seeds 0 1 2 3 4 or more to show equivalence at ±{100 * MARGIN:g} points.")
    if not memory:
        return lines
    ratios = ", ".join(f"depth {d} {m['MF']['total_mib'] / m['BP']['total_mib']:.0%}" for d, m in memory.items())
    lines.append(f"Memory, total MF/BP: {ratios} (MF v2: {CLAIM:.0%}, its Mixer's size, batch and meter unknown). "
                 "BP keeps every block's activations until its backward pass, MF one block's at a time, so BP's step "
                 "peak grows with depth and MF's does not; both keep the same parameters and optimiser state, "
                 "whose share of BP's total bounds the ratio below (benchmarks/mixer_memory.py explains the "
                 "terms).")
    if mlp:
        ratio = mlp["MF"]["total_mib"] / mlp["BP"]["total_mib"]
        lines.append(f"The 2 x 1000 MLP on MNIST ({MLP_LABEL}), total MF/BP {ratio:.0%}: its parameters and "
                     "optimiser state dominate, and one layer's gradients outweigh a step's activations, so MF "
                     "saves next to nothing there (as Spyra & Dzwinel found).")
    return lines
