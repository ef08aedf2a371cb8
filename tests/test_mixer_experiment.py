"""python -m minimf.experiments mixer at the tiny setting: it runs end to end and writes its tables, raw
numbers and memory plot; the same seed gives the same numbers; MF and BP are paired by seed; both rules
get the same trials; PathMNIST joins only where its file is present; and the memory figure shows BP's
step peak growing with depth and MF's not."""
import json
import statistics

import pytest

from minimf.experiments import mixer as mixer_module
from minimf.experiments.__main__ import main
from minimf.experiments.common import SCALES, Context
from minimf.experiments.decomposition import paired
from minimf.experiments.tune import Settings

SEEDS = ["0", "1", "2"]


def run_tiny(out):
    assert main(["mixer", "--tiny", "--seeds", *SEEDS, "--out", str(out), "--no-progress"]) == 0
    return json.loads((out / "results.json").read_text())["results"], (out / "results.md").read_text()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The experiment run twice with the same seeds (each a few seconds)."""
    first = run_tiny(tmp_path_factory.mktemp("first"))
    return first, run_tiny(tmp_path_factory.mktemp("again"))


def test_it_runs_end_to_end_and_writes_its_tables_and_plot(two_runs):
    (raw, md), _ = two_runs
    assert "python -m minimf.experiments mixer --tiny --seeds 0 1 2" in md
    for title in ("mnist: every trial", "mnist: final runs", "mnist: MF - BP paired by seed",
                  "Memory of one training step", "verdict at ±0.25 points", "total MF/BP (v2: 31%)"):
        assert title in md
    assert "| MF - BP |" in md
    assert ("mixer_memory.png" in md) or ("matplotlib is not installed" in md)
    assert list(raw["datasets"]) == ["mnist"]
    result = raw["datasets"]["mnist"]
    assert sorted(result["scores"]["mf"]) == sorted(result["scores"]["bp"]) == SEEDS
    assert set(result["mf_minus_bp"]) == {"mean", "low", "high", "verdict"}
    assert [int(d) for d in raw["memory"]["by_depth"]] == list(mixer_module.MEMORY["tiny"].depths)


def test_the_memory_plot_is_drawn(tmp_path):
    pytest.importorskip("matplotlib")
    from minimf.experiments.common import write_figures
    memory = {depth: {rule: {"total_mib": total} for rule, total in (("MF", 1.0), ("BP", 1.0 + depth))}
              for depth in (1, 2, 4)}
    paths, note = write_figures({"mixer_memory": lambda ax: mixer_module.plot_memory(ax, memory, "test")}, tmp_path)
    assert note == "" and paths == [tmp_path / "mixer_memory.png"] and paths[0].stat().st_size > 0


def test_the_same_seeds_give_the_same_numbers(two_runs):
    (first, _), (again, _) = two_runs
    for key in ("trials", "chosen", "scores", "mf_minus_bp"):
        assert first["datasets"]["mnist"][key] == again["datasets"]["mnist"][key], key
    assert first["candidates"] == again["candidates"]


def test_both_rules_get_the_same_trials(two_runs):
    (raw, _), _ = two_runs
    trials = raw["datasets"]["mnist"]["trials"]
    settings = {algo: [(t["lr"], t["schedule"], t["epochs"]) for t in trials[algo]] for algo in ("mf", "bp")}
    assert settings["mf"] == settings["bp"] == [(c["lr"], c["schedule"], c["epochs"]) for c in raw["candidates"]]
    for algo in ("mf", "bp"):
        assert all(set(t) == {"trial", "lr", "schedule", "epochs", "val_acc"} for t in trials[algo])


def test_mf_and_bp_are_paired_by_seed(two_runs):
    """The difference is taken seed by seed, and each seed's score is that seed's own run."""
    (raw, _), _ = two_runs
    result = raw["datasets"]["mnist"]
    mf, bp = result["scores"]["mf"], result["scores"]["bp"]
    assert result["mf_minus_bp"]["mean"] == pytest.approx(statistics.fmean(mf[s] - bp[s] for s in SEEDS))
    ctx = Context(name="mixer", scale=SCALES["tiny"], seeds=[0, 1, 2], progress=False)
    chosen = result["chosen"]["bp"]
    again = mixer_module.train_mixer(ctx, "bp", "mnist", Settings(chosen["lr"], chosen["schedule"], chosen["epochs"]),
                                     seed=1)
    assert again["test_acc"] == bp["1"]
    # pairing is by seed, not by position: a different order of the same seeds pairs the same runs
    reordered = {s: bp[s] for s in reversed(SEEDS)}
    assert paired(mf, reordered) == paired(mf, bp)
    with pytest.raises(ValueError, match="share their seeds"):
        paired(mf, {s: bp[s] for s in SEEDS[:2]})


def test_memory_bp_step_peak_grows_with_depth_and_mf_does_not(two_runs):
    (raw, _), _ = two_runs
    by_depth = raw["memory"]["by_depth"]
    shallow, deep = by_depth["1"], by_depth["2"]
    assert deep["BP"]["step_peak_mib"] > shallow["BP"]["step_peak_mib"]
    assert deep["MF"]["step_peak_mib"] < 1.5 * shallow["MF"]["step_peak_mib"]
    assert deep["MF"]["total_mib"] < deep["BP"]["total_mib"]
    for pair in by_depth.values():
        for rule in pair.values():
            assert rule["total_mib"] == pytest.approx(rule["resident_mib"] + rule["step_peak_mib"])


def test_the_mlp_beside_the_mixers_needs_about_the_same_memory_with_either_rule(two_runs):
    """The 2 x 1000 MLP on MNIST: its parameters dominate, MF/BP is about 1."""
    (raw, md), _ = two_runs
    mlp = raw["memory"]["mlp"]
    assert raw["memory"]["mlp_sizes"] == [784, 1000, 1000]
    assert 0.9 < mlp["MF"]["total_mib"] / mlp["BP"]["total_mib"] < 1.1
    assert mlp["MF"]["resident_mib"] > 3 * mlp["MF"]["step_peak_mib"]      # parameters and Adam's state
    assert "| MLP 784-1000-1000 |" in md and "| Mixer, depth 2 |" in md


def test_pathmnist_joins_only_where_its_file_is_present(monkeypatch):
    ctx = Context(name="mixer", scale=SCALES["tiny"], seeds=[0], progress=False)
    monkeypatch.setattr(mixer_module, "image_datasets_present", lambda data_dir=None: ["mnist"])
    assert mixer_module.datasets_here(ctx) == ["mnist"]
    monkeypatch.setattr(mixer_module, "image_datasets_present", lambda data_dir=None: ["mnist", "pathmnist"])
    assert mixer_module.datasets_here(ctx) == ["mnist", "pathmnist"]


def test_the_absence_of_pathmnist_is_said(two_runs):
    (_, md), _ = two_runs
    assert "PathMNIST (MF v2's Mixer benchmark) was not run" in md


def test_without_a_memory_pool_the_accuracy_is_still_reported(monkeypatch):
    """On the CPU stand-in for CuPy there is no memory pool to measure: a note, not a crash (one seed:
    no interval either)."""
    def no_pool(xp):
        raise ValueError("GPU memory is measured on CuPy's memory pool")
    monkeypatch.setattr(mixer_module, "memory_meter", no_pool)
    report = mixer_module.mixer_comparison(Context(name="mixer", scale=SCALES["tiny"], seeds=[0], progress=False))
    assert "memory" not in report.raw and report.figures == {}
    assert any(note.startswith("No memory figure: GPU memory") for note in report.notes)
    assert any(note.startswith("One seed") for note in report.notes)
    assert "needs 2 seeds" in report.tables[-1][1]
