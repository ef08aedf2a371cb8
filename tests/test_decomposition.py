"""python -m minimf.experiments decomposition (minimf/experiments/decomposition.py): objective against
locality. At the tiny setting: it runs end to end and writes its files; every cell is there at every
depth; the same seeds give the same numbers; the cells that share layers start from the same weights
and see the same batches; the paired statistics pair runs of the same seed (with a must-fail case:
scores moved to other seeds change the interval); the table's locality and objective add up to the gap.
"""
import json

import numpy as np
import pytest

from minimf.experiments import EXPERIMENTS, decomposition as dec
from minimf.experiments.__main__ import main
from minimf.experiments import common
from minimf.experiments.common import SCALES, Context
from minimf.experiments.stats import paired_interval

SEEDS = [0, 1, 2]
DEPTHS = dec.DEPTHS["tiny"]


def run_experiment(out):
    assert main(["decomposition", "--tiny", "--seeds", *map(str, SEEDS), "--out", str(out), "--no-progress"]) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run with three seeds: (output folder, results.json)."""
    out = tmp_path_factory.mktemp("decomposition")
    return out, run_experiment(out)


def without_seconds(results):
    """results.json's numbers less the wall times (which no seed fixes)."""
    runs = {depth: {cell: {seed: {k: v for k, v in record.items() if k != "seconds"}
                           for seed, record in seeds.items()} for cell, seeds in cells.items()}
            for depth, cells in results["runs"].items()}
    return {**{k: v for k, v in results.items() if k != "seconds"}, "runs": runs}


def test_runs_end_to_end_and_writes_its_files(tiny_run):
    out, saved = tiny_run
    md = (out / "results.md").read_text()
    assert "python -m minimf.experiments decomposition --tiny" in md and "scale tiny" in md
    assert md.count("\n|---|") == 3               # accuracies, the decomposition, each layer
    assert (out / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["config"]["seeds"] == SEEDS and saved["results"]["margin"] == 0.0025


def test_every_cell_is_there_at_every_depth(tiny_run):
    out, saved = tiny_run
    runs, md = saved["results"]["runs"], (out / "results.md").read_text()
    assert sorted(runs) == sorted(str(d) for d in DEPTHS)
    names = [cell.name for cell in dec.CELLS]
    assert names == ["BP", "MF", "MF-global", "FF", "FF-global", "MF + layer norm"]
    for depth in DEPTHS:
        assert list(runs[str(depth)]) == names
        for name in names:
            assert sorted(runs[str(depth)][name]) == [str(s) for s in SEEDS]
            assert f"| {depth} x 32 | {name} |" in md                  # a row of the accuracy table
            if name != "BP":                                          # each layer's accuracy, for every layer
                assert all(len(r["layer_test_acc"]) == depth for r in runs[str(depth)][name].values())
                assert md.count(f"| {depth} x 32 | {name} |") == 2    # and a row of the per-layer table
        assert saved["results"]["paired_to_bp"][str(depth)].keys() == set(names) - {"BP"}
        assert list(saved["results"]["seconds"][str(depth)]) == names


def test_cells_are_scored_by_their_modes(tiny_run):
    """MF cells by the last layer's goodness (bp mode), FF cells by all labels, BP by its output."""
    results = tiny_run[1]["results"]
    for depth, cells in results["runs"].items():
        for cell in dec.CELLS:
            key = {"mf": "test_acc_bp", "ff": "test_acc_all_labels", "bp": "test_acc"}[cell.algo]
            assert results["scores"][depth][cell.name] == {s: r[key] for s, r in cells[cell.name].items()}


def test_same_seeds_same_results(tiny_run, tmp_path):
    assert without_seconds(run_experiment(tmp_path)["results"]) == without_seconds(tiny_run[1]["results"])


def test_one_layer_global_credit_is_the_local_rule(tiny_run):
    """With one layer nothing lies above it: the global rules train exactly as the local ones."""
    runs = without_seconds(tiny_run[1]["results"])["runs"]["1"]
    assert runs["MF-global"] == runs["MF"] and runs["FF-global"] == runs["FF"]
    assert runs["MF + layer norm"] != runs["MF"]


# --- the same start and the same batches --------------------------------------------------------

def test_cells_that_share_layers_start_from_the_same_weights_and_batches(monkeypatch):
    """Every run of the grid, caught as it starts: per seed and depth, MF, MF-global and
    MF + layer norm hold the same initial weights, FF and FF-global too; BP shares layer 1 with MF;
    every cell gets the same data and the seed that draws the batch order."""
    started = []
    original = common.fit_config

    def catch(net, data, config, *rest, **kwargs):
        started.append({"flags": (config.algo, config.credit, config.input_norm), "depth": len(config.hidden),
                        "seed": config.seed, "batch_size": config.batch_size, "data": data,
                        "state": {k: v.copy() for k, v in net.state_dict().items()}})
        return original(net, data, config, *rest, **kwargs)

    monkeypatch.setattr(common, "fit_config", catch)
    ctx = Context(name="decomposition", scale=SCALES["tiny"], seeds=[0, 1], progress=False)
    runs, seconds = dec.run_grid(ctx, DEPTHS, epochs=1)
    assert runs.keys() == seconds.keys() == set(DEPTHS)
    assert len(started) == len(DEPTHS) * len(dec.CELLS) * 2
    assert all(run["data"] is started[0]["data"] and run["batch_size"] == 256 for run in started)

    def state(algo, credit, norm, depth, seed):
        [run] = [r for r in started if r["flags"] == (algo, credit, norm) and (r["depth"], r["seed"]) == (depth, seed)]
        return run["state"]

    def same(a, b):
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    for depth in DEPTHS:
        for seed in (0, 1):
            mf = state("mf", "local", "none", depth, seed)
            assert same(mf, state("mf", "global", "none", depth, seed))
            assert same(mf, state("mf", "local", "layer", depth, seed))
            assert same(state("ff", "local", "none", depth, seed), state("ff", "global", "none", depth, seed))
            bp = state("bp", "local", "none", depth, seed)
            assert np.array_equal(bp["layers.0.W"], mf["layers.0.W"])
        assert not same(state("mf", "local", "none", depth, 0), state("mf", "local", "none", depth, 1))


# --- the pairs are runs of the same seed ------------------------------------------------------------

def test_paired_statistics_match_runs_by_seed(tiny_run):
    """The reported interval of MF - BP is paired_interval of the two cells' scores in seed order;
    the same scores in another dict order give the same pairs; the must-fail: MF's scores moved to
    other seeds change the interval."""
    results = tiny_run[1]["results"]
    for depth in map(str, DEPTHS):
        scores = {cell: {int(s): v for s, v in by_seed.items()} for cell, by_seed in results["scores"][depth].items()}
        mf, bp = scores["MF"], scores["BP"]
        interval = paired_interval([mf[s] for s in SEEDS], [bp[s] for s in SEEDS])
        reported = results["paired_to_bp"][depth]["MF"]
        assert (reported["mean"], reported["low"], reported["high"]) == (interval.mean, interval.low, interval.high)
        assert dec.paired(dict(reversed(mf.items())), bp) == dec.paired(mf, bp)


def test_moving_scores_to_other_seeds_changes_the_interval():
    """Must fail: cell a is cell b plus one point on every seed, so the paired interval is exactly
    [+1, +1]; the same scores of a on other seeds (a rotation) pair unlike runs and give a wide one."""
    b = {0: 0.90, 1: 0.80, 2: 0.85, 3: 0.70}
    a = {seed: value + 0.01 for seed, value in b.items()}
    interval = paired_interval(*dec.paired(a, b))
    assert interval.low == pytest.approx(0.01) and interval.high == pytest.approx(0.01)
    rotated = {seed: a[(seed + 1) % 4] for seed in a}
    moved = paired_interval(*dec.paired(rotated, b))
    assert moved.high - moved.low > 0.1 and moved.mean == pytest.approx(interval.mean)
    assert dec.difference(rotated, b) != dec.difference(a, b)
    with pytest.raises(ValueError, match="must share their seeds"):
        dec.paired(a, {0: 0.9, 1: 0.8, 2: 0.85, 4: 0.7})


def test_locality_plus_objective_is_the_gap(tiny_run):
    """The decomposition table's columns: (MF - MF-global) + (MF-global - BP) = MF - BP, in means."""
    results = tiny_run[1]["results"]
    for cells in results["scores"].values():
        for local, glob in dec.FAMILIES:
            mean = lambda a, b: paired_interval(*dec.paired(cells[a], cells[b])).mean
            assert mean(local.name, glob.name) + mean(glob.name, "BP") == pytest.approx(mean(local.name, "BP"))


def test_decomposition_defaults_to_five_seeds(monkeypatch, tmp_path):
    """Five seeds by default, as `tune`: with three, a paired t interval has 2 degrees of freedom."""
    class Started(Exception):
        pass

    def record_seeds(ctx):
        raise Started(ctx.seeds)
    monkeypatch.setitem(EXPERIMENTS, "decomposition", record_seeds)
    with pytest.raises(Started) as started:
        main(["decomposition", "--tiny", "--out", str(tmp_path), "--no-progress"])
    assert started.value.args[0] == [0, 1, 2, 3, 4]
