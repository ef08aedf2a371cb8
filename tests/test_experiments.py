"""python -m minimf.experiments: every experiment runs end to end at the tiny setting and writes its
files; the hot-plug check catches a layer that changed; bad arguments give clear errors; the
measuring helpers count what they claim to count."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from minimf.experiments import common
from minimf.training import NETWORKS, RunConfig, train_run, validate
from minimf.backend import gpu_available, get_backend
from minimf.rules.backprop import BackpropNet
from minimf.datasets import DATASETS
from minimf.datasets.tabular import sklearn_version
from minimf.experiments import EXPERIMENTS, accuracy, hotplug
from minimf.experiments.__main__ import main
from minimf.experiments.common import (SCALES, Context, algorithms, image_datasets_present, markdown_table,
                                       mean_std, pm, train_rule)
from minimf.experiments.measure import (MIB, TracemallocMeter, epoch_times, interleaved, memory_meter,
                                        mf_layer_trace, random_batch, seconds_of, step_peak_bytes, time_epoch)
from minimf.rules.mono_forward import MonoForwardNet

WITH_FIGURES = {"memory": ["memory_trace", "memory_vs_depth_mlp", "memory_vs_depth_cnn"],
                "convergence": ["convergence", "error_vs_depth"]}


def tiny_context(**kwargs):
    return Context(name="test", scale=SCALES["tiny"], seeds=[0], progress=False, **kwargs)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_each_experiment_runs_and_writes_its_files(name, tmp_path, capsys):
    out = tmp_path / name
    assert main([name, "--tiny", "--seeds", "0", "--out", str(out), "--no-progress"]) == 0
    md = (out / "results.md").read_text()
    assert f"python -m minimf.experiments {name} --tiny" in md and "wall time" in md
    if name == "tabular" and sklearn_version() is None:   # the `tabular` extra is not installed
        assert "Skipped: scikit-learn is not installed" in md
        return
    assert "|---|" in md, "no Markdown table"
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["seeds"] == [0] and saved["config"]["scale"]["name"] == "tiny"
    assert saved["results"], "no raw numbers"
    for stem in WITH_FIGURES.get(name, []):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "|---|" in capsys.readouterr().out   # the tables are printed too


def test_tiny_setting_by_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMF_EXPERIMENTS_TINY", "1")
    assert main(["prediction", "--out", str(tmp_path), "--no-progress"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["config"]["scale"]["name"] == "tiny"


@pytest.mark.parametrize("argv, message", [
    (["nonsense"], "invalid choice: 'nonsense'"),
    (["mlp", "--seeds", "1", "1"], "--seeds must be different"),
    (["mlp", "--epochs", "0"], "expected a positive number"),
    (["mlp", "--quick", "--tiny"], "exclude each other"),
    (["mlp", "--backend", "tpu"], "invalid choice: 'tpu'"),
])
def test_bad_arguments_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(gpu_available(), reason="a GPU is present: the cupy backend works here")
def test_cupy_without_gpu_is_a_clear_error(capsys, real_cupy_only):
    with pytest.raises(SystemExit):
        main(["memory", "--tiny", "--backend", "cupy"])
    assert "cupy" in capsys.readouterr().err.lower()


# --- the rules come from minimf.training.NETWORKS --------------------------------------------------

def test_rules_are_taken_from_train_networks(monkeypatch):
    with_mlp = [name for name, classes in NETWORKS.items() if classes[0] is not None]
    assert algorithms("mlp") == with_mlp and "mf" in with_mlp and "bp" in with_mlp
    assert "ff" not in algorithms("cnn")          # FF has no CNN in minimf
    assert "sff" in algorithms("cnn") and "sff" not in algorithms("mlp")   # SFF has only a CNN
    monkeypatch.setitem(NETWORKS, "bp-copy", (BackpropNet, None))
    assert "bp-copy" in algorithms("mlp") and "bp-copy" not in algorithms("cnn")


def test_a_rule_added_to_networks_appears_in_the_table(monkeypatch):
    monkeypatch.setitem(NETWORKS, "bp-copy", (BackpropNet, None))
    report = accuracy.mlp(tiny_context())
    table = report.tables[0][1]
    assert "| BP-COPY |" in table
    # the same class, seed and data as BP: the same accuracy, so the row is a real run
    assert report.raw["mnist"]["BP-COPY"] == report.raw["mnist"]["BP"]


def test_train_run_is_minimf_train_with_the_papers_setting():
    _, history = train_rule(tiny_context(), "mf", hidden=[16], epochs=1, seed=3)
    config = validate(RunConfig(hidden=[16], epochs=1, seed=3, train_subset=512, test_subset=256, no_progress=True,
                                lr=1e-3, lr_schedule="constant"))
    _, expected = train_run(config, log=lambda line: None)
    assert history[0]["test_acc_bp"] == expected[0]["test_acc_bp"]
    assert history[0]["train_loss"] == expected[0]["train_loss"]


def test_experiments_keep_the_papers_setting_whatever_the_cli_defaults(monkeypatch):
    """The experiments train with the paper's Adam 1e-3 at a constant rate, whatever the command line's
    defaults (tune's choice), so that their tables stay reproducible. An experiment's own --lr still wins."""
    seen = []
    monkeypatch.setattr(common, "fit_config", lambda net, data, config: seen.append(config) or [{}])
    train_rule(tiny_context(), "mf", hidden=[16], epochs=1)
    train_rule(tiny_context(), "mf", hidden=[16], epochs=1, options={"lr": 0.005, "lr_schedule": "cosine"})
    assert RunConfig().lr != 1e-3            # the command line's default differs
    assert [(config.lr, config.lr_schedule) for config in seen] == [(1e-3, "constant"), (0.005, "cosine")]


def test_downloadable_data_sets_count_only_when_their_files_are_there(tmp_path):
    assert image_datasets_present(tmp_path) == ["mnist"]
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    files = DATASETS["fashion-mnist"].files
    for f in files:
        with open(folder / f.name, "wb") as handle:
            handle.truncate(f.size)              # the catalogued size, no content: load() would check it
    assert image_datasets_present(tmp_path) == ["mnist", "fashion-mnist"]
    with open(folder / files[0].name, "wb") as handle:
        handle.truncate(files[0].size - 1)       # a partial file does not count
    assert image_datasets_present(tmp_path) == ["mnist"]


def test_tabular_is_skipped_with_a_message_without_scikit_learn(monkeypatch):
    monkeypatch.setattr(accuracy, "sklearn_version", lambda: None)
    report = accuracy.tabular(tiny_context())
    assert not report.tables and "scikit-learn is not installed" in report.notes[0]


# --- hot-plugging ----------------------------------------------------------------------------------

def hotplug_net(rng):
    net = MonoForwardNet(sizes=[12, 10, 10], num_classes=3, seed=0)
    x = rng.standard_normal((64, 12)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    return net, x, y


def test_plugging_in_a_layer_leaves_the_layers_below_identical(rng):
    net, x, y = hotplug_net(rng)
    before = hotplug.layer_outputs(net, x)
    hotplug.plug_in_layer(net, 10, seed=0)
    W3 = net.layers[2].W.copy()
    hotplug.train_layer_alone(net, 2, x, y, epochs=2, seed=0)
    assert not np.array_equal(W3, net.layers[2].W), "the new layer did not learn"
    hotplug.assert_unchanged(before, hotplug.layer_outputs(net, x), [0, 1], "plug-in")


def test_the_hotplug_check_rejects_a_changed_layer(rng):
    """Must fail: training layer 2 (index 1) changes its outputs, and the check says so."""
    net, x, y = hotplug_net(rng)
    before = hotplug.layer_outputs(net, x)
    hotplug.train_layer_alone(net, 1, x, y, epochs=1, seed=0)
    hotplug.assert_unchanged(before, hotplug.layer_outputs(net, x), [0], "layer 1 untouched")
    with pytest.raises(AssertionError, match="layer 2's outputs changed"):
        hotplug.assert_unchanged(before, hotplug.layer_outputs(net, x), [0, 1], "retraining layer 2")


def test_damage_changes_only_the_damaged_layer(rng):
    net, x, _ = hotplug_net(rng)
    before = hotplug.layer_outputs(net, x)
    W1 = net.layers[1].W.copy()
    hotplug.damage_layer(net, 1, seed=0)
    assert not np.array_equal(W1, net.layers[1].W) and net.layers[1].W.dtype == np.float32
    hotplug.assert_unchanged(before, hotplug.layer_outputs(net, x), [0], "damage")


# --- measuring -------------------------------------------------------------------------------------

def test_bp_step_memory_grows_with_depth_and_mf_does_not():
    """200-unit layers: from 3 to 6 hidden layers BP holds 3 more layers' caches and gradients until
    its backward pass; MF frees each layer's before the one after next starts. (From depth 3 on, every
    MF layer's peak is the same: the layer before it is a 200x200 one; at depth 2 it is the 64x200
    first layer, whose smaller gradients are still alive while layer 2 starts.)"""
    x, y = random_batch(64, (64,))
    with TracemallocMeter() as meter:
        peak = {(kind.__name__, d): step_peak_bytes(lambda: kind(sizes=[64] + [200] * d), x, y, meter) / MIB
                for kind in (MonoForwardNet, BackpropNet) for d in (3, 6)}
    bp_growth = peak[("BackpropNet", 6)] - peak[("BackpropNet", 3)]
    mf_growth = peak[("MonoForwardNet", 6)] - peak[("MonoForwardNet", 3)]
    assert bp_growth > 3 * 200 * 200 * 4 / MIB      # at least three more 200x200 float32 gradients
    assert mf_growth < 0.1 * bp_growth, (mf_growth, bp_growth)


def test_mf_layer_trace_holds_one_layer_at_a_time():
    x, y = random_batch(256, (64,))
    with memory_meter(np) as meter:
        records = mf_layer_trace(MonoForwardNet(sizes=[64] + [200] * 5), x, y, meter)
    assert [r["layer"] for r in records] == [1, 2, 3, 4, 5]
    held = [r["in_use_at_start"] for r in records[2:]]   # layers 3-5: a_(i-1) and layer i-1's gradients
    assert max(held) - min(held) < 0.05 * max(held)
    a_previous, gradients = 256 * 200 * 4, (200 * 200 + 200 + 10 * 200) * 4   # float32 bytes
    assert a_previous + gradients <= held[0] < 1.2 * (a_previous + gradients)
    assert not any("local_gradients" in vars(layer) for layer in MonoForwardNet().layers)


def test_epoch_timer_runs_every_batch_once_per_epoch():
    class Counter:
        def __init__(self):
            self.sizes = []

        def train_step(self, x, y):
            self.sizes.append(len(x))

    net = Counter()
    x, y = np.zeros((10, 3)), np.zeros(10)
    assert time_epoch(net, x, y, 4) >= 0 and net.sizes == [4, 4, 2]
    nets = {"a": Counter(), "b": Counter()}
    times = epoch_times(nets, x, y, {"mini": 4, "full": 10}, repeats=2)
    assert set(times) == {("a", "mini"), ("a", "full"), ("b", "mini"), ("b", "full")}
    assert all(len(v) == 2 for v in times.values())
    assert nets["a"].sizes == [4, 10] + [4, 4, 2, 10] * 2     # warm-up, then interleaved epochs


def test_interleaved_takes_every_timer_once_per_repeat():
    calls, said, synced = [], [], []
    timers = {"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2}
    times = interleaved(timers, repeats=2, say=lambda repeat, name: said.append((repeat, name)))
    assert calls == ["a", "b", "a", "b"] and times == {"a": [1, 1], "b": [2, 2]}
    assert said == [(1, "a"), (1, "b"), (2, "a"), (2, "b")]
    assert seconds_of(lambda: None, sync=lambda: synced.append(1)) >= 0 and synced == [1, 1]   # before and after


def test_mean_std_and_formatting():
    assert mean_std([0.5]) == (0.5, 0.0)
    mean, std = mean_std([0.1, 0.3])
    assert math.isclose(mean, 0.2) and math.isclose(std, math.sqrt(0.02))
    assert pm([0.9812]) == "98.12" and pm([0.98, 0.99]) == "98.50 ± 0.71"
    assert markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


@pytest.mark.gpu
def test_cupy_pool_meter_counts_an_allocation():
    xp = get_backend("cupy")
    with memory_meter(xp) as meter:
        meter.reset_peak()
        start = meter.current()
        block = xp.zeros(MIB, dtype=xp.uint8)
        assert meter.peak() - start >= MIB
        del block
    assert meter.current() <= start + MIB


def test_extra_evaluations_use_the_data_of_their_own_backend(tmp_path, capsys):
    """prepared_data returns the data of the experiment's own backend and scale, not the first data
    set prepared in the process: a NumPy experiment after a cupy run must not evaluate device arrays
    (the strict stand-in would refuse them). Each backend in turn, in one process."""
    for backend in ("cupy", "numpy"):
        assert main(["hotplug", "--tiny", "--seeds", "0", "--backend", backend, "--out", str(tmp_path / backend),
                     "--no-progress"]) == 0


# --- the output folder is checked before anything is computed -------------------------------------

def test_an_existing_report_is_never_overwritten(tmp_path, capsys, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    (out / "results.md").write_text("my hand-written notes")
    ran = []
    monkeypatch.setitem(EXPERIMENTS, "layerwise", lambda ctx: ran.append(ctx))
    with pytest.raises(SystemExit) as exit_info:
        main(["layerwise", "--tiny", "--out", str(out), "--no-progress"])
    assert exit_info.value.code == 2 and "holds a report already (results.md)" in capsys.readouterr().err
    assert (out / "results.md").read_text() == "my hand-written notes" and ran == []   # refused before computing


def test_an_out_that_is_a_file_is_refused_before_computing(tmp_path, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    ran = []
    monkeypatch.setitem(EXPERIMENTS, "layerwise", lambda ctx: ran.append(ctx))
    with pytest.raises(SystemExit):
        main(["layerwise", "--tiny", "--out", str(tmp_path / "a-file"), "--no-progress"])
    assert "is a file, not a folder" in capsys.readouterr().err and ran == []


def test_the_default_folder_gets_a_new_number_when_it_holds_a_report(tmp_path, monkeypatch):
    from minimf.experiments.__main__ import report_folder
    monkeypatch.chdir(tmp_path)
    first = report_folder(None, "mlp")
    assert first == Path("runs/experiments/mlp")
    (first / "results.md").write_text("old")
    assert report_folder(None, "mlp") == Path("runs/experiments/mlp-2")
    assert (first / "results.md").read_text() == "old"
