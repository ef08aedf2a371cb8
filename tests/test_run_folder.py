"""Run folders under hostile use (issue 25): nothing a user made is lost, nothing silently wrong.

Every data-loss case compares the user's files byte for byte before and after; every refusal
checks the exit code and a one-line message without a traceback. The SIGKILL and damaged-checkpoint
cases live in tests/test_resume_kill.py and tests/test_resume.py.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minimf.training.loop as loop_module
import minimf.training.run as run_module
from minimf import MonoForwardNet
from minimf.checkpoint import load_checkpoint, save_checkpoint
from minimf.nn.optim import SGD, Adam
from minimf.run_folder import LOCK, RunLock, checkpoint_folders
from minimf.train import main
from minimf.training import TrainingDiverged
from minimf.training.loop import StopRequest

SMALL = ["--train-subset", "300", "--test-subset", "100", "--batch-size", "50", "--epochs", "2", "--no-progress",
         "--hidden", "16", "--lr-schedule", "constant"]


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder`` (the lock file aside: it records a process id)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK}


def without_seconds(folder):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((folder / "metrics.json").read_text())]


def same_model(a, b):
    with np.load(a / "model.npz") as x, np.load(b / "model.npz") as y:
        return sorted(x.files) == sorted(y.files) and all(np.array_equal(x[k], y[k]) for k in x.files)


def refused(argv, capsys, code=2):
    """``main(argv)`` exits with ``code`` (2: argparse's usage error) and one message, no traceback."""
    if code == 2:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        got = exit_info.value.code
    else:
        got = main(argv)
    err = capsys.readouterr().err
    assert got == code and "Traceback" not in err, err
    return err


@pytest.fixture
def finished_run(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(SMALL + ["--out", str(folder)]) == 0
    capsys.readouterr()
    return folder


# --- 1. --overwrite acts only after the whole configuration is valid ----------------------------------

@pytest.mark.parametrize("bad, message", [
    (["--lr-schedule", "step"], "--lr-schedule step needs --lr-steps"),
    (["--pipeline", "--algo", "bp"], "--pipeline is for --algo"),
    (["--seed", "-1"], "--seed: expected an integer of 0 or more"),
    (["--split-units", "17"], "--split-units 17: more threads than the 16 units"),
])
def test_overwrite_with_a_bad_option_leaves_the_folder_as_it_was(bad, message, finished_run, capsys):
    before = snapshot(finished_run)
    err = refused(SMALL + ["--out", str(finished_run), "--overwrite", *bad], capsys)
    assert message in err
    assert snapshot(finished_run) == before


def test_overwrite_with_a_data_dir_that_is_a_file_leaves_the_folder_as_it_was(finished_run, tmp_path, capsys):
    before = snapshot(finished_run)
    (tmp_path / "a-file").write_text("x")
    err = refused(SMALL + ["--out", str(finished_run), "--overwrite", "--data-dir", str(tmp_path / "a-file")], capsys)
    assert "is a file, not a folder" in err
    assert snapshot(finished_run) == before


# --- 2. a resume with nothing to continue from -------------------------------------------------------

def test_resume_of_a_finished_run_without_checkpoints_is_refused(finished_run, capsys):
    shutil.rmtree(finished_run / "checkpoints")
    before = snapshot(finished_run)
    err = refused(["--resume", str(finished_run), "--epochs", "3"], capsys, code=1)
    assert "no checkpoint to continue from" in err and "metrics.json and model.npz" in err
    assert snapshot(finished_run) == before


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_again(tmp_path, capsys):
    """Nothing but config.json: nothing to lose, so the run starts from its beginning (the kill tests rely on it)."""
    reference, folder = tmp_path / "reference", tmp_path / "killed"
    assert main(SMALL + ["--out", str(reference)]) == 0
    folder.mkdir()
    shutil.copy(reference / "config.json", folder / "config.json")
    assert main(["--resume", str(folder)]) == 0
    assert without_seconds(folder) == without_seconds(reference) and same_model(folder, reference)


# --- 3. one run at a time ----------------------------------------------------------------------------

def test_a_second_run_into_a_folder_in_use_is_refused_naming_the_holder(tmp_path, capsys):
    folder = tmp_path / "busy"
    with RunLock(folder):
        err = refused(SMALL + ["--out", str(folder)], capsys, code=1)
        assert f"in use by another run (process {os.getpid()})" in err
        assert not (folder / "config.json").exists()


def test_a_resume_into_a_folder_in_use_is_refused(finished_run, capsys):
    before = snapshot(finished_run)
    with RunLock(finished_run):
        err = refused(["--resume", str(finished_run), "--epochs", "3"], capsys, code=1)
    assert "in use by another run" in err
    assert snapshot(finished_run) == before


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, capsys):
    """A process that held the lock and was killed: its lock file stays, the lock itself went with it."""
    folder = tmp_path / "stale"
    code = ("import os, sys; from minimf.run_folder import RunLock\n"
            f"RunLock({str(folder)!r}).__enter__(); os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code], check=False)
    assert (folder / LOCK).read_text().strip().isdigit()
    assert main(SMALL + ["--out", str(folder)]) == 0
    assert (folder / LOCK).read_text().strip() == str(os.getpid())


def test_the_lock_check_would_catch_two_runs(tmp_path):
    """Must fail without the lock: two holders of one folder at once are impossible."""
    with RunLock(tmp_path):
        with pytest.raises(Exception, match="in use by another run"):
            RunLock(tmp_path).__enter__()


# --- 4. a run removes only what it wrote -------------------------------------------------------------

def user_files(folder):
    """Files of the user's inside a run folder, some named as minimf's own."""
    made = {"checkpoints/notes.txt": b"my notes", "checkpoints/epoch-0001-step-000000/mine.txt": b"not a checkpoint",
            ".config.json.abcdef.tmp": b"looks temporary", ".metrics.json.12345678.tmp": b"mine too",
            "checkpoints/.epoch-0002-step-000000.x.tmp/keep.txt": b"mine", "README": b"hand-written"}
    for name, data in made.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return made


def test_user_files_survive_a_first_run_a_resume_and_an_overwrite(tmp_path, capsys, signal_after):
    folder = tmp_path / "mine"
    folder.mkdir()
    made = user_files(folder)
    assert main(SMALL + ["--out", str(folder), "--checkpoint-every", "2"]) == 0
    assert main(["--resume", str(folder), "--epochs", "3"]) == 0
    assert main(SMALL + ["--out", str(folder), "--overwrite", "--seed", "1"]) == 0
    capsys.readouterr()
    after = snapshot(folder)
    assert {name: after.get(name) for name in made} == made
    assert not list(folder.glob(".minimf-replaced-*")), "the set-aside old run is gone after the first epoch"


def test_overwrite_stopped_before_its_first_epoch_puts_the_old_run_back(finished_run, capsys, signal_after):
    before = snapshot(finished_run)
    signal_after(3)                                                # epoch 1, step 3 of the new run
    assert main(SMALL + ["--out", str(finished_run), "--overwrite", "--seed", "7"]) == 130
    assert "the run it replaced is back" in capsys.readouterr().err
    assert snapshot(finished_run) == before


def test_overwrite_that_fails_before_its_first_epoch_puts_the_old_run_back(finished_run, capsys, monkeypatch):
    before = snapshot(finished_run)

    def diverge(losses, epoch, step):
        raise TrainingDiverged(f"the training loss became nan at epoch {epoch}, step {step}, layer 1")
    monkeypatch.setattr(loop_module, "check_finite", diverge)
    err = refused(SMALL + ["--out", str(finished_run), "--overwrite", "--seed", "7"], capsys, code=1)
    assert "became nan" in err and "hold the last finished epoch" in err    # the old run's, which is back
    assert snapshot(finished_run) == before


# --- 5. checkpoints belong to their run -------------------------------------------------------------

def test_a_checkpoint_of_another_run_is_refused_by_name(tmp_path, capsys, signal_after):
    mine, other, reference = tmp_path / "mine", tmp_path / "other", tmp_path / "reference"
    assert main(SMALL + ["--out", str(reference)]) == 0
    assert main(SMALL + ["--out", str(other)]) == 0                  # the same settings, another run
    signal_after(3)
    assert main(SMALL + ["--out", str(mine)]) == 130
    foreign = checkpoint_folders(other)[-1]
    shutil.copytree(foreign, mine / "checkpoints" / "epoch-0009-step-000000")
    capsys.readouterr()
    assert main(["--resume", str(mine)]) == 0
    err = capsys.readouterr().err
    assert "epoch-0009-step-000000" in err and "belongs to another run" in err
    assert without_seconds(mine) == without_seconds(reference) and same_model(mine, reference)


def test_a_checkpoint_with_other_settings_is_refused(finished_run, tmp_path, capsys):
    """A checkpoint whose recorded settings differ (written before runs had an identity, say) is refused."""
    newest = checkpoint_folders(finished_run)[-1]
    arrays, info = load_checkpoint(newest)
    info.pop("run_id")
    info["config"]["settings"]["seed"] = 5
    save_checkpoint(finished_run / "checkpoints" / "epoch-0003-step-000001", arrays, {**info, "step": 1})
    assert main(["--resume", str(finished_run), "--epochs", "3"]) == 0
    err = capsys.readouterr().err
    assert "epoch-0003-step-000001" in err and "--seed 5 (now 0)" in err


@pytest.mark.parametrize("epoch, step, message", [(0, 0, "progress is not sane"), (2, -1, "progress is not sane")])
def test_a_checkpoint_with_insane_progress_is_refused_not_followed(epoch, step, message, finished_run, capsys):
    newest = checkpoint_folders(finished_run)[-1]
    arrays, info = load_checkpoint(newest)
    save_checkpoint(finished_run / "checkpoints" / "epoch-0004-step-000000", arrays, {**info, "epoch": epoch,
                                                                                       "step": step})
    assert main(["--resume", str(finished_run), "--epochs", "3"]) == 0
    assert message in capsys.readouterr().err


def test_checkpoints_are_ordered_by_their_numbers(tmp_path):
    folder = tmp_path / "checkpoints"
    for name in ("epoch-9999-step-000001", "epoch-10000-step-000000", "epoch-0002-step-1000000",
                 "epoch-0002-step-999999"):
        (folder / name).mkdir(parents=True)
        (folder / name / "manifest.json").write_text("{}")
    assert [p.name for p in checkpoint_folders(tmp_path)] == [
        "epoch-0002-step-999999", "epoch-0002-step-1000000", "epoch-9999-step-000001", "epoch-10000-step-000000"]


# --- 6. SIGTERM, as a scheduler sends it -------------------------------------------------------------

def test_sigterm_checkpoints_and_resumes_bit_for_bit(tmp_path, capsys, signal_after):
    reference, folder = tmp_path / "reference", tmp_path / "terminated"
    assert main(SMALL + ["--out", str(reference)]) == 0
    signal_after(4, signal.SIGTERM)
    assert main(SMALL + ["--out", str(folder)]) == 143
    err = capsys.readouterr().err
    assert "interrupted at epoch 1, step 4 (SIGTERM)" in err and f"--resume {folder}" in err
    assert main(["--resume", str(folder)]) == 0
    assert without_seconds(folder) == without_seconds(reference) and same_model(folder, reference)


# --- 7. values checked where they are used ------------------------------------------------------------

def test_an_input_that_overflows_float32_is_refused():
    net = MonoForwardNet(sizes=[4, 3], num_classes=2)
    x = np.full((2, 4), 1e300)                              # finite in float64, inf in float32
    with pytest.raises(ValueError, match="NaN or infinite"):
        net.train_step(x, np.array([0, 1]))
    assert all(np.isfinite(p).all() for layer in net.layers for p in layer.params.values() if p is not None)


@pytest.mark.parametrize("lr", [float("nan"), float("inf"), -1.0, 0.0])
def test_a_learning_rate_that_is_not_a_finite_positive_number_is_refused(lr):
    for make in (lambda: Adam(lr=lr), lambda: SGD(lr=lr), lambda: MonoForwardNet(sizes=[4, 3], lr=lr)):
        with pytest.raises(ValueError, match="learning rate"):
            make()


def test_parameters_that_diverge_in_the_last_update_stop_the_run(tmp_path, capsys, monkeypatch):
    """The losses are computed before each update: a NaN written by the chunk's last update is seen
    only by the parameter check (must fail without it: the run would exit 0 with a model of NaN)."""
    real_step = MonoForwardNet.train_step
    calls = {"n": 0}

    def poisoned_last_step(self, x, y, validate=True):
        losses = real_step(self, x, y, validate)
        calls["n"] += 1
        if calls["n"] == 6:                                   # the last step of epoch 1
            self.layers[0].W[0, 0] = np.nan
        return losses
    monkeypatch.setattr(MonoForwardNet, "train_step", poisoned_last_step)
    err = refused(SMALL + ["--out", str(tmp_path / "nan")], capsys, code=1)
    assert "layer 1 W is no longer finite after epoch 1, step 6" in err
    assert "No epoch had finished" in err and not (tmp_path / "nan" / "model.npz").exists()


# --- 8. clear errors where there were tracebacks -----------------------------------------------------

def test_a_network_too_large_for_memory_is_a_clear_error(tmp_path, capsys, monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 5.8 GiB")
    monkeypatch.setattr(run_module, "build_network", no_memory)
    err = refused(SMALL + ["--out", str(tmp_path / "big")], capsys)
    assert "out of memory building the network (--hidden 16" in err
    assert not (tmp_path / "big" / "config.json").exists()


def test_a_hand_edited_config_json_is_a_clear_error(finished_run, capsys):
    record = json.loads((finished_run / "config.json").read_text())
    record["settings"]["epochs"] = "two"
    (finished_run / "config.json").write_text(json.dumps(record))
    err = refused(["--resume", str(finished_run)], capsys)
    assert "config.json's settings are not a run's" in err and "--epochs" in err


def test_a_second_ctrl_c_stops_at_once_without_a_traceback(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(run_module, "load_data", interrupted)
    assert main(SMALL + ["--out", str(tmp_path / "x")]) == 130
    err = capsys.readouterr().err
    assert "stopped at once" in err and "Traceback" not in err


def test_a_further_sigterm_leaves_the_stop_at_the_step_a_second_ctrl_c_does_not():
    """A scheduler may repeat SIGTERM, and an experiment passes its stop on to workers that had it
    already: the stop at the end of the step goes on (must fail if any second signal stops at once)."""
    with StopRequest() as stop:
        signal.raise_signal(signal.SIGTERM)
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            pytest.fail("a second SIGTERM stopped the training at once, in the middle of its step")
        assert stop.requested == "SIGTERM"
    with StopRequest() as stop:
        signal.raise_signal(signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


# --- 9. a state loads strictly ----------------------------------------------------------------------

def small_state():
    net = MonoForwardNet(sizes=[4, 3, 3], num_classes=2)
    return net, net.state_dict()


@pytest.mark.parametrize("breakage, message", [
    (lambda s: s.pop("layers.1.M"), "no array 'layers.1.M'"),
    (lambda s: s.update({"layers.2.W": np.zeros((3, 3), np.float32)}), "the network lacks: layers.2.W"),
    (lambda s: s.update({"extra": np.zeros(1)}), "the network lacks: extra"),
    (lambda s: s.update({"layers.0.W": s["layers.0.W"].T.copy()}), "has shape (3, 4)"),
    (lambda s: s.__setitem__("layers.0.b", np.array([np.nan, 0, 0], np.float32)), "NaN or infinite"),
    (lambda s: s.__setitem__("layers.0.b", np.zeros(3, np.complex64)), "complex64, not a real floating-point"),
    (lambda s: s.__setitem__("layers.0.b", np.zeros(3, np.int32)), "int32, not a real floating-point"),
    (lambda s: s.__setitem__("layers.0.b", np.array([None] * 3, dtype=object)), "object, not a real"),
])
def test_load_state_dict_refuses_what_does_not_fit_by_name(breakage, message):
    net, state = small_state()
    before = {k: v.copy() for k, v in net.state_dict().items()}
    breakage(state)
    with pytest.raises(ValueError, match=re.escape(message)):
        net.load_state_dict(state)
    after = net.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)      # nothing half-loaded


def test_a_three_layer_state_does_not_load_into_two_layers():
    three = MonoForwardNet(sizes=[4, 3, 3, 3], num_classes=2).state_dict()
    with pytest.raises(ValueError, match="the network lacks: layers.2"):
        MonoForwardNet(sizes=[4, 3, 3], num_classes=2).load_state_dict(three)


def test_an_integer_dtype_is_refused_by_the_constructor():
    for dtype in ("int32", "float16", "complex64"):
        with pytest.raises(ValueError, match="dtype must be one of float32, float64"):
            MonoForwardNet(sizes=[4, 3], dtype=dtype)


def test_an_idx_header_whose_sizes_overflow_is_a_clear_error():
    """2^31 x 2^31 x 4 images: NumPy's int64 product wraps to 0, which an empty body would match
    (must fail with np.prod: the reshape then raised a bare ValueError)."""
    from minimf.datasets import DatasetError
    from minimf.datasets.idx import IMAGES_MAGIC, parse_idx
    assert int(np.prod([2 ** 31, 2 ** 31, 4])) == 0
    header = IMAGES_MAGIC.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (2 ** 31, 2 ** 31, 4))
    with pytest.raises(DatasetError, match="truncated: header says"):
        parse_idx(header, IMAGES_MAGIC)


def test_a_batch_larger_than_any_integer_numpy_knows_is_one_batch(tmp_path, capsys):
    assert main(SMALL + ["--batch-size", str(10 ** 24), "--epochs", "1"]) == 0
    assert "epoch 1/1" in capsys.readouterr().out
