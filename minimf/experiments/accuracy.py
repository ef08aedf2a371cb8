"""The accuracy experiments of MF v1 (arXiv 2501.09238v1): Tables 1, 2, 3, 6 and Figures 4-5.

    layerwise     Table 1: every MF layer's own accuracy and both prediction modes, 2 and 3 hidden layers, beside BP
    mlp           Table 3: test accuracy of every rule in minimf.training.NETWORKS, MLP, on the data sets present
    cnn           Table 2: the same with the CNN (rules without a CNN are left out)
    convergence   Figures 4-5: test error against epochs (4 x 1000 MLP) and against depth, MF and BP
    tabular       Table 6: MF against BP on Breast Cancer and Digits (needs scikit-learn)

Every run trains as ``python -m minimf.train`` does, with the same settings (common.train_rule): Adam
1e-3, batch 256, the data set's standardisation; one run per seed, mean +- std over seeds.
"""
from minimf.datasets import DATASETS
from minimf.datasets.tabular import sklearn_version
from minimf.experiments.common import (NOT_CHECKED, Report, accuracies, algorithms, image_datasets_present,
                                       markdown_table, mean_std, method_name, pm, train_history)

# Numbers of MF v1 that docs/results.md quotes (MNIST, 784-1000-1000). Anything else: NOT_CHECKED.
PAPER_MNIST_MLP = {"MF (bp mode)": "98.76", "BP": "98.75"}


def run_seeds(ctx, bar, algo, **kwargs):
    """One train_history per seed; returns the list of histories (one list of epoch records per seed)."""
    histories = []
    for seed in ctx.seeds:
        bar.set_postfix_str(f"{algo} seed {seed}")
        histories.append(train_history(ctx, algo, seed=seed, **kwargs))
        bar.update(1)
    return histories


# --- Table 1 ---------------------------------------------------------------------------------------

def layerwise(ctx):
    """Each MF layer's accuracy on its own, both prediction modes, for 2 and 3 hidden layers; BP beside."""
    s, epochs = ctx.scale, ctx.epochs_or(ctx.scale.epochs)
    depths = (2, 3)
    report = Report("Table 1: accuracy of each MF layer, both prediction modes, beside BP (MNIST)")
    report.settings = {"MLP width": s.width, "hidden layers": "2 and 3", "epochs": epochs,
                       "train/test examples": f"{s.train_subset or 60000}/{s.test_subset or 10000}"}
    rows, raw = [], {}
    with ctx.bar(2 * len(depths) * len(ctx.seeds), "layerwise") as bar:
        for depth in depths:
            hidden = [s.width] * depth
            mf = [h[-1] for h in run_seeds(ctx, bar, "mf", hidden=hidden, epochs=epochs)]
            bp = [h[-1] for h in run_seeds(ctx, bar, "bp", hidden=hidden, epochs=epochs)]
            layers = [pm([r["layer_test_acc"][i] for r in mf]) for i in range(depth)]
            layers += ["–"] * (max(depths) - depth)
            rows.append([f"{depth} x {s.width}", *layers, pm([r["test_acc_bp"] for r in mf]),
                         pm([r["test_acc_ff"] for r in mf]), pm([r["test_acc"] for r in bp])])
            raw[f"depth_{depth}"] = {"mf": mf, "bp": bp}
    header = ["network", *[f"MF layer {i + 1}" for i in range(max(depths))], "MF bp mode", "MF ff mode", "BP"]
    report.tables.append(("Test accuracy (%), mean ± std over seeds", markdown_table(header, rows)))
    report.notes.append(f"Paper (Table 1): {NOT_CHECKED}.")
    report.raw = raw
    return report


# --- Tables 2 and 3 --------------------------------------------------------------------------------

def mlp(ctx):
    return rules_table(ctx, "mlp")


def cnn(ctx):
    return rules_table(ctx, "cnn")


def rules_table(ctx, arch):
    """Test accuracy of every rule of minimf.training.NETWORKS with ``arch`` on every image data set present."""
    s = ctx.scale
    epochs = ctx.epochs_or(s.epochs if arch == "mlp" else s.cnn_epochs)
    datasets = image_datasets_present(ctx.data_dir)
    rules = algorithms(arch)
    shape = {"hidden": [s.width, s.width]} if arch == "mlp" else {"channels": list(s.channels)}
    table = "Table 3" if arch == "mlp" else "Table 2"
    report = Report(f"{table}: test accuracy of each learning rule, {arch.upper()}")
    network = ("784-" + "-".join(map(str, shape["hidden"])) + " ReLU (other data sets: their input size)"
               if arch == "mlp" else "conv blocks " + "-".join(map(str, shape["channels"])))
    report.settings = {"network": network, "epochs": epochs, "rules": " ".join(rules),
                       "data sets": " ".join(datasets),
                       "train/test examples": f"{s.train_subset or 'all'}/{s.test_subset or 'all'}"}
    missing = [n for n, i in DATASETS.items() if i.kind == "image" and n not in datasets]
    results = {}      # dataset -> method -> [accuracy per seed]
    with ctx.bar(len(datasets) * len(rules) * len(ctx.seeds), arch) as bar:
        for dataset in datasets:
            results[dataset] = {}
            for algo in rules:
                for record in (h[-1] for h in run_seeds(ctx, bar, algo, dataset=dataset, arch=arch,
                                                        epochs=epochs, **shape)):
                    for mode, acc in accuracies(record).items():
                        results[dataset].setdefault(method_name(algo, mode), []).append(acc)
    methods = list(next(iter(results.values())))
    rows = [[m, *[pm(results[d][m]) for d in datasets]] for m in methods]
    report.tables.append(("Test accuracy (%), mean ± std over seeds", markdown_table(["method", *datasets], rows)))
    if arch == "mlp" and s.width == 1000:
        paper = [f"{m} {PAPER_MNIST_MLP[m]}" for m in methods if m in PAPER_MNIST_MLP]
        report.notes.append(f"Paper (MNIST, 784-1000-1000, as quoted in docs/results.md): {', '.join(paper)}; "
                            f"every other cell: {NOT_CHECKED}.")
    else:
        report.notes.append(f"Paper ({table}): {NOT_CHECKED}.")
    if missing:
        report.notes.append(f"Not run (not downloaded here; `python -m minimf.datasets download NAME`): "
                            f"{', '.join(missing)}.")
    report.raw = results
    return report


# --- Figures 4-5 -----------------------------------------------------------------------------------

def convergence(ctx):
    """Test error per epoch of a 4 x width MLP (MF bp mode and BP), and the final error against depth."""
    s, epochs = ctx.scale, ctx.epochs_or(max(ctx.scale.epochs, 3) if ctx.scale.name != "tiny" else 1)
    depths = sorted(set(s.depths) | {4}) if s.name != "tiny" else list(s.depths)
    curve_depth = 4 if 4 in depths else max(depths)
    report = Report(f"Figures 4-5: test error against epochs ({curve_depth} x {s.width} MLP) and against depth")
    report.settings = {"width": s.width, "depths": depths, "epochs": epochs, "optimizer": "Adam 1e-3, batch 256",
                       "train/test examples": f"{s.train_subset or 60000}/{s.test_subset or 10000}"}
    errors = {}       # depth -> method -> [[error per epoch] per seed]
    with ctx.bar(2 * len(depths) * len(ctx.seeds), "convergence") as bar:
        for depth in depths:
            errors[depth] = {}
            for algo in ("mf", "bp"):
                for history in run_seeds(ctx, bar, algo, hidden=[s.width] * depth, epochs=epochs):
                    curve = [1 - r.get("test_acc_bp", r["test_acc"]) for r in history]
                    errors[depth].setdefault(algo.upper(), []).append(curve)
    per_epoch = [[e + 1, *[pm([c[e] for c in errors[curve_depth][m]]) for m in ("MF", "BP")]]
                 for e in range(epochs)]
    report.tables.append((f"Test error (%) per epoch, {curve_depth} x {s.width}, MF in bp mode",
                          markdown_table(["epoch", "MF", "BP"], per_epoch)))
    by_depth = [[d, *[pm([c[-1] for c in errors[d][m]]) for m in ("MF", "BP")]] for d in depths]
    report.tables.append((f"Test error (%) after epoch {epochs} against depth (hidden layers of {s.width})",
                          markdown_table(["hidden layers", "MF", "BP"], by_depth)))
    report.notes.append(f"Paper (Figures 4-5: MF's convergence does not depend on depth): {NOT_CHECKED} "
                        f"beyond that statement.")
    report.figures = {"convergence": lambda ax: plot_curves(ax, errors[curve_depth], curve_depth, s.width),
                      "error_vs_depth": lambda ax: plot_depth(ax, errors, depths)}
    report.raw = {str(d): v for d, v in errors.items()}
    return report


def plot_curves(ax, curves, depth, width):
    for method, runs in curves.items():
        epochs = range(1, len(runs[0]) + 1)
        means = [100 * mean_std([r[e] for r in runs])[0] for e in range(len(runs[0]))]
        stds = [100 * mean_std([r[e] for r in runs])[1] for e in range(len(runs[0]))]
        ax.errorbar(list(epochs), means, yerr=stds, marker="o", capsize=3, label=method)
    ax.set(xlabel="epoch", ylabel="test error (%)", title=f"{depth} x {width} MLP, MNIST")
    ax.legend()


def plot_depth(ax, errors, depths):
    for method in ("MF", "BP"):
        stats = [mean_std([r[-1] for r in errors[d][method]]) for d in depths]
        ax.errorbar(depths, [100 * m for m, _ in stats], yerr=[100 * s for _, s in stats], marker="o",
                    capsize=3, label=method)
    ax.set(xlabel="hidden layers", ylabel="final test error (%)", title="error against depth, MNIST")
    ax.legend()


# --- Table 6 ---------------------------------------------------------------------------------------

TABULAR = ("breast-cancer", "digits")


def tabular(ctx):
    """MF (both modes) against BP on scikit-learn's Breast Cancer and Digits."""
    report = Report("Table 6: MF against BP on tabular data")
    if sklearn_version() is None:
        report.notes.append('Skipped: scikit-learn is not installed (pip install -e ".[tabular]").')
        return report
    s, epochs = ctx.scale, ctx.epochs_or(ctx.scale.tabular_epochs)
    report.settings = {"hidden": list(s.tabular_hidden), "epochs": epochs, "split": "minimf's fixed 4/5 : 1/5",
                       "scikit-learn": sklearn_version()}
    results = {}
    with ctx.bar(2 * len(TABULAR) * len(ctx.seeds), "tabular") as bar:
        for dataset in TABULAR:
            results[dataset] = {}
            for algo in ("mf", "bp"):
                for history in run_seeds(ctx, bar, algo, dataset=dataset, hidden=s.tabular_hidden, epochs=epochs):
                    for mode, acc in accuracies(history[-1]).items():
                        results[dataset].setdefault(method_name(algo, mode), []).append(acc)
    methods = list(results[TABULAR[0]])
    rows = [[m, *[pm(results[d][m]) for d in TABULAR]] for m in methods]
    report.tables.append(("Test accuracy (%), mean ± std over seeds", markdown_table(["method", *TABULAR], rows)))
    report.notes.append(f"Paper (Table 6): {NOT_CHECKED}. The tabular sets have no published split: minimf "
                        f"holds out a fixed fifth, so numbers are not comparable to the paper's split.")
    report.raw = results
    return report
