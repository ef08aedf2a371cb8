"""Runs that lose nothing (issue 17): a run stopped anywhere and continued with ``--resume`` ends with
parameters, metrics and files bit for bit those of the run never stopped; nothing is overwritten by
surprise; a damaged checkpoint is refused by name.

Two ways to stop a run: Ctrl-C, sent here as a real SIGINT to this process after the k-th batch
(the progress bar is where a batch is handed out, for every trainer), and SIGKILL to a child
process at random moments (tests/test_resume_kill.py).
"""
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import minimf.training.loop as loop_module
import minimf.training.run as run_module
from minimf import MonoForwardNet
from minimf.backend import gpu_available
from minimf.checkpoint import (CheckpointError, load, load_checkpoint, restore_training_state, save,
                               save_checkpoint, training_state)
from minimf.run_folder import checkpoint_folders
from minimf.train import main

SMALL = ["--train-subset", "300", "--test-subset", "100", "--batch-size", "50", "--epochs", "3", "--no-progress"]
# Runs that are resumed with a raised --epochs take a constant rate: a cosine decay (the default) is
# laid over all the epochs, so a run stretched from 3 to 4 is not the 4-epoch run from its start.
RUNS = {
    "mf-mlp": ["--algo", "mf", "--hidden", "16", "12", "--lr-schedule", "constant"],
    "mf-cnn": ["--algo", "mf", "--arch", "cnn", "--channels", "3", "4"],
    "bp-mlp-cosine": ["--algo", "bp", "--hidden", "16", "--lr-schedule", "cosine"],
    "bp-cnn-step": ["--algo", "bp", "--arch", "cnn", "--channels", "3", "4", "--lr-schedule", "step",
                    "--lr-steps", "1", "2"],
    "ff-mlp": ["--algo", "ff", "--hidden", "16", "12"],
    "fa-mlp-sgd": ["--algo", "fa", "--hidden", "16", "--optimizer", "sgd", "--lr", "0.05"],
    "dfa-cnn": ["--algo", "dfa", "--arch", "cnn", "--channels", "3", "4"],
    "pepita-mlp": ["--algo", "pepita", "--hidden", "16"],
    "sff-cnn": ["--algo", "sff", "--arch", "cnn", "--channels", "3", "4"],
    "mf-pipeline": ["--algo", "mf", "--hidden", "16", "12", "--pipeline"],
    "mf-split-units": ["--algo", "mf", "--hidden", "16", "12", "--split-units", "2"],
    "bp-split-batch": ["--algo", "bp", "--hidden", "16", "--split-batch", "2", "--micro-batch", "20"],
    "mf-validation": ["--algo", "mf", "--hidden", "16", "--validation", "50"],
    "mf-cupy-pipeline": ["--algo", "mf", "--hidden", "16", "12", "--backend", "cupy", "--pipeline"],
    "ff-cupy": ["--algo", "ff", "--hidden", "16", "--backend", "cupy"],
}


def without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def assert_same_run(folder, reference):
    """metrics.json (but the seconds) and model.npz of ``folder`` equal ``reference``'s, bit for bit."""
    metrics = [json.loads((f / "metrics.json").read_text()) for f in (folder, reference)]
    assert without_seconds(metrics[0]) == without_seconds(metrics[1])
    with np.load(folder / "model.npz") as a, np.load(reference / "model.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture
def ctrl_c_after(signal_after):
    """``ctrl_c_after(k)``: a real SIGINT to this process when the k-th batch (of the run) is handed out."""
    return signal_after


def reference_run(tmp_path, argv):
    folder = tmp_path / "uninterrupted"
    assert main(argv + ["--out", str(folder)]) == 0
    return folder


@pytest.mark.parametrize("name", list(RUNS))
def test_ctrl_c_then_resume_ends_as_the_uninterrupted_run(name, tmp_path, capsys, ctrl_c_after):
    """Stopped by Ctrl-C twice (mid-epoch, between --checkpoint-every boundaries), resumed each time."""
    if name == "mf-cupy-pipeline" and gpu_available():
        pytest.skip("on a GPU the pipeline's streams agree to rounding only (cuBLAS: bitwise with one stream)")
    argv = SMALL + RUNS[name]
    reference = reference_run(tmp_path, argv)
    folder = tmp_path / "stopped"
    ctrl_c_after(4)                                    # epoch 1 (6 steps of 50), step 4
    assert main(argv + ["--out", str(folder), "--checkpoint-every", "5"]) == 130
    err = capsys.readouterr().err
    assert "interrupted at epoch 1, step 4" in err and f"--resume {folder}" in err
    ctrl_c_after(9)                                    # epoch 3, step 1 of the resumed run
    assert main(["--resume", str(folder)]) == 130
    assert "interrupted at epoch 3, step 1" in capsys.readouterr().err
    assert main(["--resume", str(folder)]) == 0
    assert_same_run(folder, reference)


def test_augmented_run_resumes_with_its_crops_and_flips(tiny_cifar10, tmp_path, capsys, ctrl_c_after):
    argv = ["--dataset", "cifar10", "--arch", "cnn", "--channels", "4", "8", "--augment", "--epochs", "2",
            "--batch-size", "16", "--no-progress"]
    reference = reference_run(tmp_path, argv)
    ctrl_c_after(3)
    assert main(argv + ["--out", str(tmp_path / "stopped")]) == 130
    assert main(["--resume", str(tmp_path / "stopped")]) == 0
    assert_same_run(tmp_path / "stopped", reference)


def test_resume_after_the_last_epoch_trains_further_with_more_epochs(tmp_path, capsys):
    argv = SMALL + RUNS["mf-mlp"]
    reference = reference_run(tmp_path, argv + ["--epochs", "4"])          # the later --epochs counts
    folder = tmp_path / "short"
    assert main(argv + ["--out", str(folder)]) == 0
    assert main(["--resume", str(folder), "--epochs", "4"]) == 0
    assert_same_run(folder, reference)
    assert json.loads((folder / "config.json").read_text())["settings"]["epochs"] == 4


def test_a_second_run_into_the_same_folder_is_refused(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(SMALL + RUNS["mf-mlp"] + ["--epochs", "1", "--out", str(folder)]) == 0
    before = (folder / "model.npz").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(SMALL + RUNS["bp-mlp-cosine"] + ["--out", str(folder)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "already holds a run (config.json, metrics.json, model.npz, losses.json" in err and "1 checkpoint)" in err
    assert f"--resume {folder}" in err and "--overwrite" in err
    assert (folder / "model.npz").read_bytes() == before              # nothing touched


def test_overwrite_replaces_only_the_run_files(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(SMALL + RUNS["mf-mlp"] + ["--epochs", "1", "--out", str(folder)]) == 0
    (folder / "notes.txt").write_text("mine")
    assert main(SMALL + RUNS["bp-mlp-cosine"] + ["--epochs", "1", "--out", str(folder), "--overwrite"]) == 0
    assert (folder / "notes.txt").read_text() == "mine"
    assert json.loads((folder / "config.json").read_text())["settings"]["algo"] == "bp"


@pytest.mark.parametrize("argv, message", [
    (["--resume", "{folder}", "--lr", "0.5"], "--lr 0.5 (recorded: 0.00188) contradicts the recorded run"),
    (["--resume", "{folder}", "--hidden", "8"], "--hidden 8 (recorded: 16 12)"),
    (["--resume", "{folder}", "--out", "{folder}"], "leave --out and --overwrite out"),
    (["--resume", "{folder}", "--epochs", "1"], "has already finished 3 epochs"),
    (["--resume", "{empty}"], "no run there (no config.json)"),
])
def test_resume_refuses_what_contradicts_the_record(argv, message, tmp_path, capsys):
    folder, empty = tmp_path / "run", tmp_path / "empty"
    empty.mkdir()
    assert main(SMALL + RUNS["mf-mlp"] + ["--out", str(folder)]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(folder=folder, empty=empty) for a in argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_resume_accepts_options_that_agree_with_the_record(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(SMALL + RUNS["mf-mlp"] + ["--epochs", "1", "--out", str(folder)]) == 0
    assert main(["--resume", str(folder), "--hidden", "16", "12", "--algo", "mf", "--epochs", "2"]) == 0


def test_a_run_recorded_under_older_defaults_resumes_with_them(tmp_path, capsys):
    """Defaults change (--lr, --lr-schedule and --epochs did, to the settings `tune` chose): a run
    recorded before keeps its numbers. Its config.json's argv lacks the options that were defaults
    then; its settings hold their values, and those are what the resumed run must use."""
    old_defaults = ["--lr", "0.001", "--lr-schedule", "constant"]
    folder = tmp_path / "old"
    assert main(SMALL + RUNS["mf-mlp"] + old_defaults + ["--epochs", "1", "--out", str(folder)]) == 0
    config = json.loads((folder / "config.json").read_text())
    argv = config["argv"]
    for option in ("--lr", "--lr-schedule"):          # as the older minimf recorded it: not given
        while option in argv:
            del argv[argv.index(option):argv.index(option) + 2]
    (folder / "config.json").write_text(json.dumps(config))
    reference = reference_run(tmp_path, SMALL + RUNS["mf-mlp"] + old_defaults + ["--epochs", "2"])
    assert main(["--resume", str(folder), "--epochs", "2"]) == 0
    assert_same_run(folder, reference)
    settings = json.loads((folder / "config.json").read_text())["settings"]
    assert (settings["lr"], settings["lr_schedule"]) == (0.001, "constant")


@pytest.mark.parametrize("where, message", [("file", "is a file, not a folder"),
                                            ("under-a-file", "cannot write into")])
def test_out_that_cannot_hold_a_run_is_a_clear_error(where, message, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker if where == "file" else blocker / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(SMALL + RUNS["mf-mlp"] + ["--out", str(out)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert blocker.read_text() == "x"


def test_a_full_disk_stops_the_run_and_keeps_the_last_good_files(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "run"
    real_write = loop_module.atomic_write_json
    calls = {"n": 0}

    def write_until_the_disk_fills(path, obj, tag=None):
        calls["n"] += 1
        if calls["n"] > 2:                              # config.json, epoch 1's metrics.json; then full
            raise OSError(28, "No space left on device")
        real_write(path, obj, tag)
    for module in (run_module, loop_module):                # config.json, then metrics.json
        monkeypatch.setattr(module, "atomic_write_json", write_until_the_disk_fills)
    assert main(SMALL + RUNS["mf-mlp"] + ["--out", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "hold the last finished epoch" in err
    assert [r["epoch"] for r in json.loads((folder / "metrics.json").read_text())] == [1]
    for module in (run_module, loop_module):
        monkeypatch.setattr(module, "atomic_write_json", real_write)
    assert main(["--resume", str(folder)]) == 0                        # and it continues from there
    assert len(json.loads((folder / "metrics.json").read_text())) == 3


# -- damaged checkpoints: refused by name, the one before used ----------------------------------------

def run_with_checkpoints(tmp_path):
    folder = tmp_path / "run"
    assert main(SMALL + RUNS["mf-mlp"] + ["--epochs", "2", "--out", str(folder)]) == 0
    return folder, checkpoint_folders(folder)      # after epoch 1 and after epoch 2


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(path):
    manifest = json.loads(path.read_text())
    manifest["info"]["epoch"] = 1
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, file, message", [
    (truncate, "state.npz", "where the manifest records"),
    (flip_a_byte, "state.npz", "its SHA-256 does not match the manifest's"),
    (truncate, "manifest.json", "not a checkpoint manifest"),
    (edit_manifest, "manifest.json", "does not match its checksum (edited or damaged)"),
    (lambda p: p.unlink(), "state.npz", "state.npz: missing"),
])
def test_a_damaged_checkpoint_is_refused_and_the_one_before_is_used(damage, file, message, tmp_path, capsys):
    folder, (older, newest) = run_with_checkpoints(tmp_path)
    damage(newest / file)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        load_checkpoint(newest)
    assert main(["--resume", str(folder), "--epochs", "3"]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint refused: {newest / file}" in err and older.name in err
    reference = reference_run(tmp_path, SMALL + RUNS["mf-mlp"])
    assert_same_run(folder, reference)              # epoch 2 trained again from epoch 1's checkpoint


def test_every_checkpoint_damaged_is_a_clear_error(tmp_path, capsys):
    folder, checkpoints = run_with_checkpoints(tmp_path)
    for checkpoint in checkpoints:
        truncate(checkpoint / "state.npz")
    assert main(["--resume", str(folder), "--epochs", "3"]) == 1
    assert "no usable checkpoint" in capsys.readouterr().err


def test_a_checkpoint_of_another_network_is_refused(tmp_path, capsys):
    folder, _ = run_with_checkpoints(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["argv"] = [a if a != "12" else "13" for a in config["argv"]]        # a wider second layer
    config["settings"]["hidden"] = [16, 13]
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["--resume", str(folder), "--epochs", "3"]) == 1
    assert "it was written with other settings: --hidden [16, 12] (now [16, 13])" in capsys.readouterr().err


def pickled_npz(path):
    with zipfile.ZipFile(path, "w") as archive:     # an .npz whose array is a pickled object
        with archive.open("layers.0.W.npy", "w") as f:
            np.lib.format.write_array(f, np.array([{"run": "code"}], dtype=object), allow_pickle=True)


def test_a_pickled_checkpoint_is_never_unpickled(tmp_path):
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, {"x": np.zeros(2)}, {"epoch": 1})
    pickled_npz(folder / "state.npz")
    with pytest.raises(CheckpointError):            # the checksum fails first ...
        load_checkpoint(folder)
    net = MonoForwardNet(sizes=[4, 3], num_classes=2)
    pickled_npz(tmp_path / "model.npz")
    with pytest.raises(CheckpointError, match="pickled objects, which are never loaded"):   # ... and load refuses
        load(net, tmp_path / "model.npz")


@pytest.mark.parametrize("content, message", [(b"not a zip", "not a readable .npz archive"),
                                              (None, "no such file")])
def test_a_damaged_model_file_is_a_clear_error(content, message, tmp_path):
    path = tmp_path / "model.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load(MonoForwardNet(sizes=[4, 3], num_classes=2), path)


def test_a_model_of_another_shape_names_the_array(tmp_path):
    save(MonoForwardNet(sizes=[4, 3], num_classes=2), tmp_path / "model.npz")
    with pytest.raises(CheckpointError, match="layers.0.W has shape"):
        load(MonoForwardNet(sizes=[4, 5], num_classes=2), tmp_path / "model.npz")


# -- the library: a whole training state ---------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_a_training_state_continues_exactly(optimizer, tmp_path, rng):
    """Train 3 steps, save the state, train 3 more; a fresh net given the state trains the same 3."""
    batches = [(rng.standard_normal((8, 6)).astype("float32"), rng.integers(0, 3, 8)) for _ in range(6)]
    make = lambda seed: MonoForwardNet(sizes=[6, 5, 4], num_classes=3, seed=seed, optimizer=optimizer)
    net = make(0)
    for x, y in batches[:3]:
        net.train_step(x, y)
    save_checkpoint(tmp_path / "state", *training_state(net))
    for x, y in batches[3:]:
        net.train_step(x, y)
    other = make(1)                                          # other weights: all of it must come back
    restore_training_state(other, *load_checkpoint(tmp_path / "state"))
    for x, y in batches[3:]:
        other.train_step(x, y)
    for a, b in zip(net.state_dict().values(), other.state_dict().values()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("breakage", ["adam state lost", "batch order stream moved", "FF's stream not saved"])
def test_the_comparison_catches_a_resume_that_loses_state(breakage, tmp_path, capsys, ctrl_c_after, monkeypatch):
    """Must fail: a resume that forgot Adam's m, or restored the batch order's stream one draw off, or
    did not save FF's negative-label stream, ends differently, and the comparison above sees it."""
    from minimf.nn.optim import Adam
    from minimf.rules.forward_forward import ForwardForwardNet
    if breakage == "adam state lost":
        real = Adam.load_state_dict

        def forgetful(self, scalars, arrays, xp):
            real(self, scalars, arrays, xp)
            for m in self.m.values():
                m[...] = 0
        monkeypatch.setattr(Adam, "load_state_dict", forgetful)
        name = "mf-mlp"
    elif breakage == "batch order stream moved":
        real_restore = loop_module.restore

        def one_draw_off(net, checkpoint, order_rng, augment_rng, steps_per_epoch):
            progress = real_restore(net, checkpoint, order_rng, augment_rng, steps_per_epoch)
            order_rng.random()
            return progress
        monkeypatch.setattr(loop_module, "restore", one_draw_off)
        name = "bp-mlp-cosine"
    else:
        monkeypatch.setattr(ForwardForwardNet, "random_streams", lambda self: {})
        name = "ff-mlp"
    with pytest.raises(AssertionError):
        test_ctrl_c_then_resume_ends_as_the_uninterrupted_run(name, tmp_path, capsys, ctrl_c_after)


# --- a run folder written before the training API --------------------------------------------------

OLD_RUN = Path(__file__).parent / "data" / "run_made_before_the_training_api"
# made by minimf at 9e8b0e5 (before RunConfig): interrupted by Ctrl-C at epoch 2, step 2, with
OLD_RUN_OPTIONS = ["--hidden", "8", "--train-subset", "256", "--test-subset", "100", "--batch-size", "64",
                   "--epochs", "2", "--checkpoint-every", "3", "--no-progress"]


def test_a_run_folder_written_before_the_training_api_resumes_bit_for_bit(tmp_path, capsys):
    """Its config.json records argv and settings the old way (with resume and overwrite among them)
    and its Adam states the rate beside t; resumed now, it ends as the same run started now."""
    old = tmp_path / "old"
    shutil.copytree(OLD_RUN, old)
    assert main(["--resume", str(old)]) == 0
    assert main(OLD_RUN_OPTIONS + ["--out", str(tmp_path / "new")]) == 0
    assert_same_run(old, tmp_path / "new")
    assert main(OLD_RUN_OPTIONS + ["--seed", "1", "--out", str(tmp_path / "other")]) == 0
    with pytest.raises(AssertionError):                 # must fail: the comparison sees another run
        assert_same_run(old, tmp_path / "other")
    capsys.readouterr()
