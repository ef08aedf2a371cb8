"""python -m minimf.experiments tune at the tiny setting: it runs end to end; the same seed gives the same
trials and choice; every rule gets the same trials from the same search space; the choice is the argmax
of validation accuracy; and the test set plays no part in it (the trials hold no test number, and
poisoned test labels change the final runs but not the trials nor the choice)."""
import json

import numpy as np
import pytest

import minimf.training.data as data_module
from minimf.training import RunConfig
from minimf.datasets import carve_validation, load
from minimf.experiments import common, tune as tune_module
from minimf.experiments.__main__ import main
from minimf.experiments.common import SCALES, Context, search_data
from minimf.experiments.tune import (LR_RANGE, SCHEDULES, Settings, choose, draw_settings,
                                    tune_hyperparameters as tune)


def tiny_context(seeds=(0, 1), trials=3, rules=None):
    return Context(name="tune", scale=SCALES["tiny"], seeds=list(seeds), progress=False, trials=trials, rules=rules)


@pytest.fixture
def fresh_data(monkeypatch):
    """An empty cache of prepared data, so that a test's (poisoned) data set is loaded anew."""
    monkeypatch.setattr(common, "_DATA", {})


def test_tune_runs_end_to_end_and_writes_every_trial(tmp_path, capsys):
    out = tmp_path / "tune"
    assert main(["tune", "--tiny", "--trials", "2", "--seeds", "0", "1", "--out", str(out), "--no-progress"]) == 0
    md = (out / "results.md").read_text()
    assert "python -m minimf.experiments tune --tiny --trials 2 --seeds 0 1" in md
    for title in ("Every trial", "Chosen on validation accuracy", "Final runs", "Paired differences"):
        assert title in md
    assert "| MF - BP (chosen) |" in md and "| MF: chosen - defaults |" in md
    saved = json.loads((out / "results.json").read_text())["results"]
    assert [len(saved["search"]["trials"][algo]) for algo in ("mf", "bp")] == [2, 2]
    assert [len(saved["final_test_acc"][algo]["chosen"]) for algo in ("mf", "bp")] == [2, 2]
    for algo in ("mf", "bp"):
        for trial in saved["search"]["trials"][algo]:
            assert set(trial) == {"trial", "lr", "schedule", "epochs", "val_acc"}, "a trial holds a test number"
            assert f"| {trial['trial']} | {trial['lr']:.3g} |" in md


def test_tune_defaults_to_five_seeds_and_its_options_are_its_own(tmp_path, capsys):
    assert main(["tune", "--tiny", "--trials", "1", "--rules", "bp", "--out", str(tmp_path), "--no-progress"]) == 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["seeds"] == [0, 1, 2, 3, 4]
    assert list(saved["results"]["search"]["trials"]) == ["bp"]
    for argv, message in ((["mlp", "--trials", "3"], "options of tune"),
                          (["tune", "--rules", "mf", "mf"], "--rules must be different"),
                          (["tune", "--rules", "mf", "nonsense"], "invalid choice: 'nonsense'"),
                          (["tune", "--trials", "0"], "expected a positive number")):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_the_same_seed_gives_the_same_trials_and_choice():
    first, again = tune(tiny_context()), tune(tiny_context())
    assert first.raw["search"]["trials"] == again.raw["search"]["trials"]
    assert first.raw["chosen"] == again.raw["chosen"]
    assert draw_settings(5, (1, 2), seed=0) == draw_settings(5, (1, 2), seed=0)
    assert draw_settings(5, (1, 2), seed=0) != draw_settings(5, (1, 2), seed=1)


def test_every_rule_gets_the_same_trials_from_the_same_space():
    report = tune(tiny_context(seeds=[0], trials=4))
    trials = report.raw["search"]["trials"]
    settings = {algo: [(t["lr"], t["schedule"], t["epochs"]) for t in trials[algo]] for algo in ("mf", "bp")}
    assert len(settings["mf"]) == len(settings["bp"]) == 4
    assert settings["mf"] == settings["bp"]
    assert report.raw["search"]["epochs"] == (1, 2) and report.raw["search"]["schedules"] == SCHEDULES


def test_the_drawn_settings_stay_in_the_search_space():
    drawn = draw_settings(200, (5, 10, 20), seed=3)
    assert all(LR_RANGE[0] <= s.lr <= LR_RANGE[1] for s in drawn)
    assert {s.schedule for s in drawn} == set(SCHEDULES) and {s.epochs for s in drawn} == {5, 10, 20}
    assert all(float(f"{s.lr:.3g}") == s.lr for s in drawn)         # what the tables show is what ran
    decades = np.histogram(np.log10([s.lr for s in drawn]), bins=[-4, -3, -2])[0]
    assert min(decades) > 70, "log-uniform: about as many draws in each decade"


def test_settings_reach_minimf_train_as_drawn():
    settings = Settings(0.00123, "cosine", 7)
    config = RunConfig(epochs=settings.epochs, **settings.options())
    assert (config.lr, config.lr_schedule, config.epochs) == (0.00123, "cosine", 7)


def test_the_choice_is_the_argmax_of_validation_accuracy():
    report = tune(tiny_context(seeds=[0], trials=3))
    for algo, trials in report.raw["search"]["trials"].items():
        best = max(t["val_acc"] for t in trials)
        assert report.raw["chosen"][algo]["val_acc"] == best
        assert report.raw["chosen"][algo] is next(t for t in trials if t["val_acc"] == best)
    records = [{"trial": 1, "val_acc": 0.5}, {"trial": 2, "val_acc": 0.9}, {"trial": 3, "val_acc": 0.9}]
    assert choose(records)["trial"] == 2          # the first of equals


def test_the_search_data_hold_no_test_image():
    ctx = tiny_context()
    data = search_data(ctx, 256, seed=0)
    held_x, held_y = carve_validation(load("mnist", "train", flatten=True), 256, 0)[1]
    assert data["validation"] is None and len(data["test"][1]) == 256 and len(data["train"][1]) == 512
    x, y = data["test"]      # standardised: the darkest value is a pixel 0
    assert np.array_equal(y, held_y) and np.array_equal(x == x.min(), held_x == 0), "not the held-out images"


def test_poisoned_test_labels_leave_the_trials_and_the_choice_unchanged(monkeypatch, fresh_data):
    """Must fail if a trial read the test set: with every test label shifted by one the test
    accuracies of the final runs change, and the trials and the choice stay as they were."""
    clean = tune(tiny_context())
    real_load = data_module.load

    def poisoned_load(name, split="train", **options):
        x, y = real_load(name, split, **options)
        return (x, (y + 1) % 10) if split == "test" else (x, y)

    monkeypatch.setattr(data_module, "load", poisoned_load)
    monkeypatch.setattr(common, "_DATA", {})
    poisoned = tune(tiny_context())
    assert poisoned.raw["final_test_acc"] != clean.raw["final_test_acc"], "the poison did not reach the test split"
    assert poisoned.raw["search"]["trials"] == clean.raw["search"]["trials"]
    assert poisoned.raw["chosen"] == clean.raw["chosen"]


def test_the_trials_do_not_train_on_the_final_data(monkeypatch):
    """Every trial trains on search_data (held_out given: the held-out split in the test split's place),
    never on the scale's data that the final runs use."""
    seen = []
    real_train_run = tune_module.train_history

    def spy(ctx, algo, **kwargs):
        seen.append(kwargs.get("held_out") is not None)
        return real_train_run(ctx, algo, **kwargs)

    monkeypatch.setattr(tune_module, "train_history", spy)
    tune(tiny_context(seeds=[0], trials=2))
    assert seen == [True] * 4 + [False] * 4      # 2 trials x 2 rules, then chosen and defaults x 2 rules
