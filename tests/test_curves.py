"""Training curves (minimf/training/curves.py, python -m minimf.plot): every step's loss kept in the run
folder, resumed runs included, and the picture drawn from it."""
import builtins
import json

import numpy as np
import pytest

from minimf.plot import main as plot_main
from minimf.train import main
from minimf.training.curves import smooth

SMALL = ["--train-subset", "300", "--test-subset", "100", "--batch-size", "50", "--epochs", "2", "--no-progress",
         "--hidden", "16", "12"]


def test_a_run_keeps_every_steps_loss_and_draws_its_curve(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(SMALL + ["--out", str(folder)]) == 0
    losses = json.loads((folder / "losses.json").read_text())
    assert sorted(losses) == ["1", "2"] and all(np.shape(losses[e]) == (6, 2) for e in losses)   # 6 steps, 2 layers
    metrics = json.loads((folder / "metrics.json").read_text())
    for record in metrics:                                   # the epoch's mean is the steps' weighted mean
        assert np.allclose(np.mean(losses[str(record["epoch"])], axis=0), record["train_loss"], atol=1e-5)
    assert (folder / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_resumed_run_keeps_the_same_losses(tmp_path, capsys, signal_after):
    reference, folder = tmp_path / "reference", tmp_path / "stopped"
    assert main(SMALL + ["--out", str(reference)]) == 0
    signal_after(8)
    assert main(SMALL + ["--out", str(folder)]) == 130             # epoch 2, step 2
    assert main(["--resume", str(folder)]) == 0
    assert (json.loads((folder / "losses.json").read_text()) ==
            json.loads((reference / "losses.json").read_text()))


def test_without_matplotlib_a_run_still_finishes(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(SMALL + ["--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "losses.json").exists() and not (tmp_path / "run" / "curve.png").exists()


def test_the_plot_command_draws_runs_side_by_side(tmp_path, capsys):
    for algo in ("mf", "bp"):
        assert main(SMALL + ["--algo", algo, "--out", str(tmp_path / algo)]) == 0
    out = tmp_path / "both.png"
    assert plot_main([str(tmp_path / "mf"), str(tmp_path / "bp"), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):                        # never replaces a picture
        plot_main([str(tmp_path / "mf"), "--out", str(out)])
    assert "exists; name a new file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plot_main([str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert "holds no run's curve" in capsys.readouterr().err


def test_smooth_is_a_moving_average():
    np.testing.assert_allclose(smooth([1, 2, 3, 4, 5], 2), [1, 1.5, 2.5, 3.5, 4.5])
    assert not np.allclose(smooth([1, 2, 3, 4, 5], 2), [1, 2, 3, 4, 5])      # must fail: it does average
