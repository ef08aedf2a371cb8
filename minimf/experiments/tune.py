"""tune: the learning rate, schedule and epochs chosen on a validation split, never on the test set; then
MF against BP with the settings each chose.

    python -m minimf.experiments tune                      # full scale: 10 trials per rule, seeds 0-4
    python -m minimf.experiments tune --quick --trials 4 --rules mf bp

1. The search. TRIALS settings are drawn at random from the search seed (the first of --seeds):

       learning rate   log-uniform in [1e-4, 1e-2]:  lr = 10^u,  u ~ U(-4, -2)  (3 significant digits)
       schedule        constant or cosine (minimf.train --lr-schedule)
       epochs          one of the scale's EPOCHS (5, 10 or 20 at full scale; --epochs E fixes it to E)

   Every rule trains with the same drawn settings (the same budget and the same search space, trial by
   trial), as minimf.train trains (common.train_rule), on the training split less VALIDATION held-out
   images (10,000 at full scale, carved once with the search seed, as ``--validation 10000`` does). A trial is scored by its
   accuracy on those held-out images after its last epoch; each rule's choice is its trial with the
   highest validation accuracy (the first of equals).

2. The final runs. Each rule's chosen settings, and minimf.train's defaults beside them, trained on the
   whole training set (60,000 images at full scale, no validation split), one run per --seeds: test
   accuracy mean +- std, and paired over seeds (stats.py) the difference of the first rule to each other
   and of each rule's choice to its defaults, with the equivalence test at +-0.25 accuracy points.

The test set is never read for the choice, and the structure shows it: a trial's data hold no test
images at all (minimf.train evaluates whatever sits under "test" after every epoch; in a trial the
held-out validation images sit there), and a trial's record holds its settings and its validation
accuracy, nothing else. tests/test_tune.py poisons the test labels and finds the same trials and choice.

Why a plain random search and not Optuna (the tool this field's re-evaluations use): at this budget,
about ten trials per rule over three settings, Optuna's default sampler (TPE) would not model anything
yet. Its first n_startup_trials = 10 trials are drawn at random, so ten TPE trials ARE a random search,
with sqlalchemy, alembic and the rest of Optuna's dependencies to install for it. A seeded random search
is also easy to make fair: both rules get exactly the same settings, which an adaptive sampler, steered
by each rule's own results, would not give; and its draws do not depend on the results, so the trials
could run in any order or in parallel (Bergstra and Bengio, JMLR 2012, on random search's efficiency
when few of the settings matter). A larger budget (50+ trials) would be the point to add Optuna as an
extra.
"""
from dataclasses import asdict, dataclass

import numpy as np

from minimf.training import RunConfig
from minimf.experiments.common import Report, markdown_table, pm, train_history
from minimf.experiments.stats import paired_interval, tost
from minimf.experiments.workers import prefetch

LR_RANGE = (1e-4, 1e-2)             # log-uniform
SCHEDULES = ("constant", "cosine")
MARGIN = 0.0025                     # the equivalence margin: 0.25 accuracy points
RULES = ["mf", "bp"]
ENOUGH_SEEDS = 5                    # final runs' seeds at full scale; fewer give wide intervals


@dataclass(frozen=True)
class SearchScale:
    """The search at one scale: trials per rule, held-out validation images, the epochs to draw from."""
    trials: int
    validation: int
    epochs: tuple


SEARCH = {"tiny": SearchScale(3, 256, (1, 2)),
          "quick": SearchScale(6, 2000, (1, 2, 5)),
          "full": SearchScale(10, 10_000, (5, 10, 20))}


@dataclass(frozen=True)
class Settings:
    """What the search chooses: minimf.train's --lr, --lr-schedule and --epochs."""
    lr: float
    schedule: str
    epochs: int

    def options(self):
        """The RunConfig fields this setting fixes (the epochs are given apart)."""
        return {"lr": self.lr, "lr_schedule": self.schedule}

    def __str__(self):
        return f"lr {self.lr:.3g}, {self.schedule}, {self.epochs} epoch{'s' * (self.epochs != 1)}"


def cli_defaults():
    """minimf.train's own defaults (RunConfig's lr, lr_schedule and epochs)."""
    defaults = RunConfig()
    return Settings(defaults.lr, defaults.lr_schedule, defaults.epochs)


def draw_settings(n, epochs, seed):
    """``n`` settings drawn at random with NumPy's generator seeded with ``seed``: the lr log-uniform in
    LR_RANGE, a schedule of SCHEDULES and a number of epochs from ``epochs``, each uniformly."""
    rng = np.random.default_rng(seed)
    low, high = np.log10(LR_RANGE)
    return [Settings(lr=float(f"{10 ** rng.uniform(low, high):.3g}"), schedule=str(rng.choice(SCHEDULES)),
                     epochs=int(rng.choice(epochs))) for _ in range(n)]


# --- 1. the search: validation accuracy only ------------------------------------------------------

def mlp_training(algo, settings, hidden, seed, held_out=None):
    """One MLP training with ``settings``, on the search's data where ``held_out`` = (V, s)
    (common.search_data): the keyword arguments of common.train_history (a plan for workers.prefetch)."""
    return dict(algo=algo, hidden=hidden, epochs=settings.epochs, seed=seed, options=settings.options(),
                held_out=held_out)


def validation_accuracy(ctx, algo, settings, validation, hidden, seed):
    """Train one trial (common.train_history) on ``search_data(ctx, validation, seed)`` and return its
    accuracy on the held-out images after the last epoch (for MF: its bp mode, minimf.train's headline)."""
    history = train_history(ctx, **mlp_training(algo, settings, hidden, seed, held_out=(validation, seed)))
    return history[-1]["test_acc"]     # the held-out validation images sat in the test split's place


def choose(trials):
    """The trial with the highest validation accuracy; the first of equals."""
    return max(trials, key=lambda trial: trial["val_acc"])


def settings_of(trial):
    """The Settings a trial record was trained with."""
    return Settings(trial["lr"], trial["schedule"], trial["epochs"])


def search(bar, rules, candidates, accuracy, label=""):
    """Every rule trained with every candidate; {rule: [trial record]}. ``accuracy(algo, settings)``
    trains one trial on the search data and returns its held-out accuracy. A record holds the trial's
    number, its settings and its validation accuracy: no test number."""
    trials = {}
    for algo in rules:
        trials[algo] = []
        for number, settings in enumerate(candidates, start=1):
            bar.set_postfix_str(f"{label}{algo} trial {number}")
            acc = accuracy(algo, settings)
            trials[algo].append({"trial": number, **asdict(settings), "val_acc": acc})
            bar.update(1)
    return trials


# --- 2. the final runs: the whole training set, test accuracy -------------------------------------

def test_accuracies(ctx, bar, algo, settings, hidden):
    """One run per seed of ``ctx.seeds`` on the whole training set of the scale: the test accuracies."""
    accs = []
    for seed in ctx.seeds:
        bar.set_postfix_str(f"{algo} final seed {seed}")
        history = train_history(ctx, **mlp_training(algo, settings, hidden, seed))
        accs.append(history[-1]["test_acc"])
        bar.update(1)
    return accs


def compare(label, a, b):
    """A row of the paired comparison of two lists of test accuracies (one per seed), in points."""
    if len(a) < 2:
        return [label, "needs 2 seeds", "", "", "", ""]
    interval, equivalence = paired_interval(a, b), tost(a, b, MARGIN)
    low, high = equivalence.interval_tost.low, equivalence.interval_tost.high
    return [label, f"{100 * interval.mean:+.2f}", f"[{100 * interval.low:+.2f}, {100 * interval.high:+.2f}]",
            f"[{100 * low:+.2f}, {100 * high:+.2f}]",
            f"{equivalence.p_lower:.3f}, {equivalence.p_upper:.3f}", equivalence.verdict]


# --- the experiment ---------------------------------------------------------------------------------

def tune_hyperparameters(ctx):
    s, space = ctx.scale, SEARCH[ctx.scale.name]
    rules, n_trials, seed = ctx.rules or RULES, ctx.trials or space.trials, ctx.seeds[0]
    epochs = (ctx.epochs,) if ctx.epochs is not None else space.epochs
    hidden, defaults = [s.width, s.width], cli_defaults()
    report = Report("Hyper-parameters chosen on a validation split, then the final runs (MNIST MLP)")
    report.settings = {
        "network": "784-" + "-".join(map(str, hidden)) + " ReLU", "rules": " ".join(rules),
        "search": f"random, {n_trials} trials per rule (the same settings for every rule), seed {seed}",
        "space": f"lr log-uniform in [{LR_RANGE[0]:g}, {LR_RANGE[1]:g}], schedule {' or '.join(SCHEDULES)}, "
                 f"epochs {' or '.join(map(str, epochs))}",
        "validation": f"{space.validation} images held out of the training split, trained on "
                      f"{s.train_subset or 60000 - space.validation}",
        "final runs": f"the whole training split ({s.train_subset or 60000}), tested on "
                      f"{s.test_subset or 10000}, seeds {' '.join(map(str, ctx.seeds))}",
        "defaults": str(defaults)}
    candidates = draw_settings(n_trials, epochs, seed)
    with ctx.bar(len(rules) * (n_trials + 2 * len(ctx.seeds)), "tune") as bar:
        prefetch(ctx, [mlp_training(algo, settings, hidden, seed, held_out=(space.validation, seed))
                       for algo in rules for settings in candidates])
        trials = search(bar, rules, candidates,
                        lambda algo, settings: validation_accuracy(ctx, algo, settings, space.validation, hidden,
                                                                   seed))
        chosen = {algo: choose(trials[algo]) for algo in rules}
        prefetch(ctx, [mlp_training(algo, settings, hidden, final_seed) for algo in rules
                       for settings in (settings_of(chosen[algo]), defaults) for final_seed in ctx.seeds])
        final = {}
        for algo in rules:
            settings = settings_of(chosen[algo])
            final[algo] = {"chosen": test_accuracies(ctx, bar, algo, settings, hidden)}
            final[algo]["defaults"] = (final[algo]["chosen"] if settings == defaults
                                       else test_accuracies(ctx, bar, algo, defaults, hidden))
    report.tables += tables(rules, candidates, trials, chosen, final, defaults, len(ctx.seeds))
    report.notes += notes(ctx, rules, final)
    report.raw = {"search": {"seed": seed, "trials_per_rule": n_trials, "validation": space.validation,
                             "lr_range": LR_RANGE, "schedules": SCHEDULES, "epochs": epochs, "trials": trials},
                  "chosen": chosen, "defaults": asdict(defaults), "final_test_acc": final,
                  "seeds": ctx.seeds, "margin": MARGIN}
    return report


def tables(rules, candidates, trials, chosen, final, defaults, n_seeds):
    names = [algo.upper() for algo in rules]
    rows = [[number, f"{c.lr:.3g}", c.schedule, c.epochs,
             *[mark(trials[algo][number - 1], chosen[algo]) for algo in rules]]
            for number, c in enumerate(candidates, start=1)]
    trial_table = markdown_table(["trial", "lr", "schedule", "epochs", *[f"{n} val %" for n in names]], rows)
    chosen_rows = [[algo.upper(), f"{chosen[algo]['lr']:.3g}", chosen[algo]["schedule"], chosen[algo]["epochs"],
                    f"{100 * chosen[algo]['val_acc']:.2f}"] for algo in rules]
    final_rows = [[algo.upper(), which, settings_of(chosen[algo]) if which == "chosen" else defaults,
                   pm(final[algo][which])] for algo in rules for which in ("chosen", "defaults")]
    comparisons = [compare(f"{rules[0].upper()} - {algo.upper()} (chosen)", final[rules[0]]["chosen"],
                           final[algo]["chosen"]) for algo in rules[1:]]
    comparisons += [compare(f"{algo.upper()}: chosen - defaults", final[algo]["chosen"], final[algo]["defaults"])
                    for algo in rules]
    header = ["paired over seeds", "mean (points)", "95% interval", "90% interval", "TOST p (lower, upper)",
              f"verdict at ±{100 * MARGIN:g} points"]
    return [("Every trial: validation accuracy (%), the chosen one in bold", trial_table),
            ("Chosen on validation accuracy", markdown_table(["rule", "lr", "schedule", "epochs", "val %"],
                                                             chosen_rows)),
            (f"Final runs: test accuracy (%), mean ± std over {n_seeds} seeds",
             markdown_table(["rule", "", "settings", "test %"], final_rows)),
            ("Paired differences of test accuracy (stats.py: Student t over seeds; TOST)",
             markdown_table(header, comparisons))]


def mark(trial, best):
    """A trial's validation accuracy in percent, bold if it is the rule's choice."""
    text = f"{100 * trial['val_acc']:.2f}"
    return f"**{text}**" if trial is best else text


def notes(ctx, rules, final):
    lines = ["The test set played no part in the choice: the trials trained and were scored without it."]
    if len(ctx.seeds) < 2:
        return lines + ["One seed: no paired interval (it needs a spread over seeds)."]
    for algo in rules:
        interval = paired_interval(final[algo]["chosen"], final[algo]["defaults"])
        if interval.low > 0:
            verdict = "beat minimf.train's defaults (95% interval of chosen - defaults above 0): new defaults?"
        elif interval.high < 0:
            verdict = "are worse than minimf.train's defaults (95% interval of chosen - defaults below 0)"
        else:
            verdict = "are not shown better than minimf.train's defaults"
        lines.append(f"{algo.upper()}: the chosen settings {verdict}.")
    if ctx.scale.name == "full" and len(ctx.seeds) < ENOUGH_SEEDS:
        lines.append(f"Fewer than {ENOUGH_SEEDS} seeds: the intervals are wide; --seeds 0 1 2 3 4 or more.")
    return lines
