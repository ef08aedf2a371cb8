"""python -m minimf.train --arch mixer: MF and BP on the MLP-Mixer through the command line, with the
pipeline where a block is a layer, checkpoints and --resume as for every network."""
import json

import numpy as np
import pytest

from minimf.train import main

MIXER = ["--arch", "mixer", "--width", "16", "--token-hidden", "8", "--channel-hidden", "24", "--depth", "2",
         "--patch", "7", "--train-subset", "200", "--test-subset", "100", "--batch-size", "50", "--epochs", "2",
         "--no-progress", "--lr-schedule", "constant"]


def same_run(a, b):
    metrics = [[{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((f / "metrics.json").read_text())]
               for f in (a, b)]
    with np.load(a / "model.npz") as x, np.load(b / "model.npz") as y:
        return metrics[0] == metrics[1] and all(np.array_equal(x[k], y[k]) for k in x.files)


@pytest.mark.parametrize("algo", ["mf", "bp"])
def test_a_mixer_trains_and_records_its_sizes(algo, tmp_path, capsys):
    assert main(MIXER + ["--algo", algo, "--out", str(tmp_path / algo)]) == 0
    out = capsys.readouterr().out
    assert "Mixer of 2 blocks, width 16, 7x7 patches" in out
    config = json.loads((tmp_path / algo / "config.json").read_text())
    assert (config["patches"], config["width"], config["depth"]) == (16, 16, 2)
    record = json.loads((tmp_path / algo / "metrics.json").read_text())[-1]
    assert ("layer_test_acc" in record) == (algo == "mf") and len(record.get("layer_test_acc", [0, 0])) == 2


def test_the_pipelined_mixer_equals_the_sequential_one(tmp_path, capsys):
    assert main(MIXER + ["--out", str(tmp_path / "sequential")]) == 0
    assert main(MIXER + ["--pipeline", "--out", str(tmp_path / "pipelined")]) == 0
    assert same_run(tmp_path / "sequential", tmp_path / "pipelined")


def test_a_stopped_mixer_resumes_bit_for_bit(tmp_path, capsys, signal_after):
    assert main(MIXER + ["--out", str(tmp_path / "reference")]) == 0
    signal_after(5)
    assert main(MIXER + ["--out", str(tmp_path / "stopped")]) == 130
    assert main(["--resume", str(tmp_path / "stopped")]) == 0
    assert same_run(tmp_path / "stopped", tmp_path / "reference")


@pytest.mark.parametrize("argv, message", [
    (["--arch", "mixer", "--patch", "5"], "5x5 patches do not tile"),
    (["--width", "8"], "--width is for --arch mixer"),
    (["--arch", "mixer", "--hidden", "8"], "--hidden is for --arch mlp"),
    (["--arch", "mixer", "--algo", "ff"], "--algo ff has no MLP-Mixer"),
    (["--arch", "mixer", "--dataset", "breast-cancer"], "--arch mixer needs images"),
])
def test_mixer_options_that_do_not_fit_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
