"""The command line, end to end on real MNIST (small subsets, small networks), and on small generated
data sets in a temporary ``$MINIMF_DATA`` for the others (fake_data.py, no network)."""
import json
import math

import numpy as np
import pytest

from fake_data import cifar_archive, fashion_files, install
from minimf import (BackpropCNN, DirectFeedbackAlignmentCNN, DirectFeedbackAlignmentNet, FeedbackAlignmentCNN,
                    FeedbackAlignmentNet, ForwardForwardNet, MonoForwardCNN, MonoForwardNet)
from minimf.checkpoint import load
from minimf.datasets import DATASETS, clear_cache
from minimf.nn.schedules import make_schedule
from minimf.train import main
from training_helpers import assert_usage_error

QUICK = ["--train-subset", "2000", "--test-subset", "1000", "--hidden", "64", "64", "--epochs", "2",
         "--lr", "5e-3", "--no-progress"]


def run(args, capsys):
    code = main(args)
    return code, capsys.readouterr()


def without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_mf_run_writes_config_metrics_and_model(tmp_path, capsys):
    code, out = run(QUICK + ["--out", str(tmp_path)], capsys)
    assert code == 0
    assert "epoch 2/2" in out.out and "test bp" in out.out and "ff" in out.out and "layers" in out.out
    assert "test accuracy:" in out.out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics] == [1, 2]
    for key in ("epoch", "test_acc_bp", "test_acc_ff", "layer_test_acc", "seconds", "train_loss"):
        assert key in metrics[-1]
    assert len(metrics[-1]["layer_test_acc"]) == 2 and len(metrics[-1]["train_loss"]) == 2
    # 2000 examples, 16 steps: far above chance (10%); measured 76.8% (bp) and 81.8% (ff)
    assert metrics[-1]["test_acc_bp"] > 0.6 and metrics[-1]["test_acc_ff"] > 0.7
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["settings"]["hidden"] == [64, 64] and config["settings"]["seed"] == 0
    assert config["sizes"] == [784, 64, 64] and config["train_examples"] == 2000
    assert config["command"].startswith("python -m minimf.train --train-subset 2000")
    net = MonoForwardNet(sizes=[784, 64, 64])
    load(net, tmp_path / "model.npz")                # the saved model loads into the same shape


def test_config_records_the_environment_that_changes_timings(tmp_path, capsys, monkeypatch):
    """OPENBLAS_CORETYPE and friends change the speed, never the numbers: config.json keeps them."""
    monkeypatch.setenv("MALLOC_MMAP_MAX_", "0")      # read by glibc at start-up only: harmless here
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    assert run(QUICK + ["--epochs", "1", "--out", str(tmp_path)], capsys)[0] == 0
    recorded = json.loads((tmp_path / "config.json").read_text())["timing_env"]
    assert recorded["MALLOC_MMAP_MAX_"] == "0" and "OPENBLAS_THREAD_TIMEOUT" not in recorded


def test_same_seed_same_metrics(tmp_path, capsys):
    for name in ("a", "b"):
        assert run(QUICK + ["--seed", "3", "--out", str(tmp_path / name)], capsys)[0] == 0
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in "ab")
    assert without_seconds(a) == without_seconds(b)
    run(QUICK + ["--seed", "4", "--out", str(tmp_path / "c")], capsys)
    c = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert without_seconds(c) != without_seconds(a)


def test_bp_run_and_validation_split(tmp_path, capsys):
    code, out = run(QUICK + ["--algo", "bp", "--validation", "500", "--out", str(tmp_path)], capsys)
    assert code == 0 and "val" in out.out
    record = json.loads((tmp_path / "metrics.json").read_text())[-1]
    assert {"test_acc", "val_acc", "train_loss", "seconds"} <= set(record)
    assert isinstance(record["train_loss"], float)


def test_ff_run_reports_both_prediction_modes(tmp_path, capsys):
    code, out = run(QUICK + ["--algo", "ff", "--out", str(tmp_path)], capsys)
    assert code == 0
    assert "test all labels" in out.out and "one pass" in out.out and "(all labels)" in out.out
    record = json.loads((tmp_path / "metrics.json").read_text())[-1]
    assert record["test_acc"] == record["test_acc_all_labels"]
    assert len(record["layer_test_acc"]) == 2 and len(record["train_loss"]) == 3   # 2 layers, read-out
    # 2000 examples, 16 steps: above chance (10%); measured all labels 40.2%, one pass 48.0%
    assert record["test_acc_all_labels"] > 0.25 and record["test_acc_one_pass"] > 0.3
    load(ForwardForwardNet(sizes=[784, 64, 64]), tmp_path / "model.npz")


@pytest.mark.parametrize("algo, kind", [("fa", FeedbackAlignmentNet), ("dfa", DirectFeedbackAlignmentNet)])
def test_feedback_alignment_runs(tmp_path, capsys, algo, kind):
    code, out = run(QUICK + ["--algo", algo, "--out", str(tmp_path)], capsys)
    assert code == 0 and f"{algo.upper()} on MNIST" in out.out
    record = json.loads((tmp_path / "metrics.json").read_text())[-1]
    assert isinstance(record["train_loss"], float)
    # 2000 examples, 16 steps: above chance (10%); measured FA 28.0% (slow while it aligns), DFA 54.5%
    assert record["test_acc"] > {"fa": 0.2, "dfa": 0.4}[algo]
    with np.load(tmp_path / "model.npz") as f:
        assert any(name.startswith("feedback.") for name in f.files)
    load(kind(sizes=[784, 64, 64]), tmp_path / "model.npz")


CNN_QUICK = ["--arch", "cnn", "--channels", "4", "8", "--train-subset", "1000", "--test-subset", "500",
             "--epochs", "1", "--lr", "5e-3", "--lr-schedule", "constant", "--no-progress"]


@pytest.mark.parametrize("algo", ["mf", "bp", "fa", "dfa"])
def test_cnn_run_on_images(tmp_path, capsys, algo):
    code, out = run(CNN_QUICK + ["--algo", algo, "--out", str(tmp_path)], capsys)
    assert code == 0
    assert "CNN channels [4, 8] on 1x28x28" in out.out and "epoch 1/1" in out.out
    record = json.loads((tmp_path / "metrics.json").read_text())[-1]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["channels"] == [4, 8] and config["input_shape"] == [1, 28, 28]
    assert config["block_shapes"] == [[4, 14, 14], [8, 7, 7]] and "sizes" not in config
    assert config["settings"]["arch"] == "cnn" and config["settings"]["hidden"] is None
    # 1000 examples, 4 steps: above chance (10%); measured MF bp 41.2%, ff 59.6%; BP 43.0%;
    # FA 44.4%, DFA 42.2%
    if algo == "mf":
        assert len(record["layer_test_acc"]) == 2 and len(record["train_loss"]) == 2
        assert record["test_acc_bp"] > 0.25 and record["test_acc_ff"] > 0.25
        net = MonoForwardCNN(channels=(4, 8))
    else:
        assert isinstance(record["train_loss"], float) and record["test_acc"] > 0.25
        net = {"bp": BackpropCNN, "fa": FeedbackAlignmentCNN, "dfa": DirectFeedbackAlignmentCNN}[algo](channels=(4, 8))
    load(net, tmp_path / "model.npz")                # the saved model loads into the same shape


@pytest.mark.parametrize("args, message", [
    (["--arch", "cnn", "--channels"], "expected at least one argument"),
    (["--arch", "cnn", "--channels", "8", "0"], "positive"),
    (["--arch", "cnn", "--channels", "8", "x"], "expected a int"),
    (["--arch", "cnn", "--channels", "2", "2", "2", "2", "2"], "too small for 5 conv blocks"),
    (["--arch", "cnn", "--hidden", "64"], "--hidden is for --arch mlp"),
    (["--channels", "8"], "--channels is for --arch cnn"),
    (["--algo", "ff", "--arch", "cnn"], "--algo ff has no convolutional network"),
    (["--arch", "resnet"], "invalid choice"),

    (["--epochs", "0"], "positive"),
    (["--lr", "-1"], "positive"),
    (["--lr", "nan"], "positive"),
    (["--batch-size", "abc"], "expected a int"),
    (["--hidden"], "expected at least one argument"),
    (["--hidden", "0"], "positive"),
    (["--algo", "sgd"], "invalid choice"),
    (["--backend", "torch"], "invalid choice"),
    (["--predict", "sum"], "invalid choice"),
    (["--validation", "60000"], "below 60000"),
    (["--validation", "-5"], "0 or more"),
    (["--dataset", "imagenet"], "invalid choice"),
    (["--dataset", "cifar10", "--validation", "50000"], "below 50000"),
    (["--augment"], "--augment is for cifar10 and cifar100"),
    (["--dataset", "fashion-mnist", "--augment"], "not fashion-mnist"),
    (["--dataset", "cifar10", "--labels", "coarse"], "--labels coarse is for cifar100"),
    (["--dataset", "digits", "--arch", "cnn"], "--arch cnn needs images; digits is tabular"),
    (["--dataset", "cifar10", "--arch", "cnn", "--channels", "8"] + ["8"] * 5, "too small for 6 conv blocks"),
    (["--lr-schedule", "step"], "--lr-schedule step needs --lr-steps"),
    (["--lr-steps", "3"], "--lr-steps is for --lr-schedule step, not cosine"),
    (["--lr-schedule", "step", "--lr-steps", "0"], "positive"),
])
def test_bad_arguments_are_usage_errors(args, message, capsys):
    assert_usage_error(main, args, message, capsys)


def test_cupy_backend_without_gpu_is_a_usage_error(capsys, real_cupy_only):
    from minimf.backend import gpu_available
    if gpu_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as exit_info:
        main(["--backend", "cupy"] + QUICK)
    assert exit_info.value.code == 2
    assert "cupy" in capsys.readouterr().err.lower()


def test_diverging_loss_stops_with_epoch_step_layer_and_keeps_last_files(backend, tmp_path, capsys, monkeypatch):
    """The losses stay on the device during an epoch and are read once at its end: a NaN still
    names its epoch, step and layer, and the epoch's files are not written."""
    real_step = MonoForwardNet.train_step
    calls = {"n": 0}

    def step_that_diverges_in_epoch_two(self, x, y, **kwargs):
        calls["n"] += 1
        losses = real_step(self, x, y, **kwargs)
        if calls["n"] == 8 + 3:                     # 8 steps per epoch at 2000/256: epoch 2, step 3
            losses[1] = losses[1] * math.nan        # a NaN on the device, as a diverging layer gives
        return losses
    monkeypatch.setattr(MonoForwardNet, "train_step", step_that_diverges_in_epoch_two)
    code, out = run(QUICK + ["--backend", backend, "--out", str(tmp_path)], capsys)
    assert code == 1
    assert "epoch 2, step 3, layer 2" in out.err and "nan" in out.err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics] == [1]        # epoch 1's files intact, epoch 2 never written
    with np.load(tmp_path / "model.npz") as f:
        assert np.isfinite(f["layers.0.W"]).all()


def test_no_normalize_and_no_bias(tmp_path, capsys):
    code, _ = run(QUICK + ["--no-normalize", "--no-bias", "--out", str(tmp_path)], capsys)
    assert code == 0
    with np.load(tmp_path / "model.npz") as f:
        assert "layers.0.b" not in f.files and "layers.0.M" in f.files


# ---------------------------------------------------------------------------------------------------
# Other data sets: generated files in a temporary $MINIMF_DATA
# ---------------------------------------------------------------------------------------------------

@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("MINIMF_DATA", str(root))
    yield root
    clear_cache()


@pytest.fixture
def tiny_cifar(data_root, monkeypatch, rng):
    """CIFAR-10 and CIFAR-100 of 100 training and 20 test images (random pixels and labels)."""
    for name in ("cifar10", "cifar100"):
        data, _ = cifar_archive(name, rng, n_per_batch=20)
        install(monkeypatch, data_root, name, {DATASETS[name].files[0].name: data}, {"train": 100, "test": 20})


TINY = ["--epochs", "1", "--batch-size", "32", "--no-progress"]


@pytest.mark.parametrize("algo", ["mf", "bp"])
def test_cifar10_cnn_with_augmentation(tiny_cifar, tmp_path, capsys, algo):
    args = ["--dataset", "cifar10", "--arch", "cnn", "--channels", "4", "8", "--algo", algo] + TINY
    code, out = run(args + ["--augment", "--out", str(tmp_path / "aug")], capsys)
    assert code == 0
    assert "on CIFAR-10, CNN channels [4, 8] on 3x32x32 -> 10 classes" in out.out
    assert "100 training examples" in out.out
    config = json.loads((tmp_path / "aug" / "config.json").read_text())
    assert config["dataset"] == "cifar10" and config["num_classes"] == 10 and config["input_shape"] == [3, 32, 32]
    assert config["block_shapes"] == [[4, 16, 16], [8, 8, 8]] and config["settings"]["augment"] is True
    kind = MonoForwardCNN if algo == "mf" else BackpropCNN
    load(kind(input_shape=(3, 32, 32), channels=(4, 8)), tmp_path / "aug" / "model.npz")
    assert run(args + ["--out", str(tmp_path / "plain")], capsys)[0] == 0
    with np.load(tmp_path / "aug" / "model.npz") as a, np.load(tmp_path / "plain" / "model.npz") as b:
        assert not np.array_equal(a["layers.0.W"], b["layers.0.W"])  # the crops and flips were used


def test_cifar100_coarse_labels_with_an_mlp(tiny_cifar, tmp_path, capsys):
    code, out = run(["--dataset", "cifar100", "--labels", "coarse", "--hidden", "16", "--augment",
                     "--out", str(tmp_path)] + TINY, capsys)
    assert code == 0 and "on CIFAR-100, sizes [3072, 16] -> 20 classes" in out.out
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["num_classes"] == 20 and config["sizes"] == [3072, 16]


def test_fashion_mnist_with_validation(data_root, monkeypatch, rng, tmp_path, capsys):
    files, _ = fashion_files(rng, n_train=80, n_test=20)
    install(monkeypatch, data_root, "fashion-mnist", files, {"train": 80, "test": 20})
    code, out = run(["--dataset", "fashion-mnist", "--hidden", "16", "--validation", "16",
                     "--out", str(tmp_path)] + TINY, capsys)
    assert code == 0 and "on Fashion-MNIST" in out.out and "64 training examples" in out.out
    record = json.loads((tmp_path / "metrics.json").read_text())[-1]
    assert "val_acc" in record and "test_acc_bp" in record


def test_breast_cancer_mlp_learns(tmp_path, capsys):
    pytest.importorskip("sklearn")
    code, out = run(["--dataset", "breast-cancer", "--hidden", "32", "--epochs", "10", "--batch-size", "32",
                     "--no-progress", "--out", str(tmp_path)], capsys)
    assert code == 0 and "sizes [30, 32] -> 2 classes" in out.out
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["train_examples"] == 456 and config["test_examples"] == 113
    # 456 rows, 10 epochs: measured 94.7% (features standardised with the training split's statistics)
    assert json.loads((tmp_path / "metrics.json").read_text())[-1]["test_acc"] > 0.9


def test_missing_data_offline_exits_with_the_manual_download_help(data_root, monkeypatch, capsys):
    from test_downloads import closed_port_url
    info = DATASETS["cifar10"]
    offline = info.files[0]._replace(urls=(closed_port_url(),))
    monkeypatch.setitem(DATASETS, "cifar10", info._replace(files=(offline,)))
    code, out = run(["--dataset", "cifar10"] + TINY, capsys)
    assert code == 1
    assert "could not download cifar-10-python.tar.gz" in out.err and "cannot connect" in out.err
    assert f"put it at\n  {data_root / 'cifar10' / 'cifar-10-python.tar.gz'}" in out.err
    assert info.files[0].sha256 in out.err


def test_step_schedule_divides_by_ten_after_each_named_epoch():
    """Three steps per epoch, 5 epochs, --lr-steps 2 4: epochs 1-2 at lr, 3-4 at lr/10, 5 at lr/100
    (PyTorch's MultiStepLR with milestones [2, 4])."""
    schedule = make_schedule("step", 0.1, steps_per_epoch=3, epochs=5, lr_steps=[2, 4])
    rates = [schedule(t) for t in range(15)]
    expected = [0.1] * 6 + [0.01] * 6 + [0.001] * 3
    np.testing.assert_allclose(rates, expected, rtol=1e-12)
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 4], gamma=0.1)
    per_epoch = []
    for _ in range(5):
        per_epoch.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(rates[::3], per_epoch, rtol=1e-12)


def test_constant_and_cosine_schedules():
    constant = make_schedule("constant", 0.5, steps_per_epoch=2, epochs=2)
    assert [constant(t) for t in range(4)] == [0.5] * 4
    cosine = make_schedule("cosine", 0.5, steps_per_epoch=2, epochs=2)
    np.testing.assert_allclose([cosine(t) for t in range(4)], [0.5, 0.25 * (1 + math.cos(math.pi / 4)),
                                                                          0.25, 0.25 * (1 + math.cos(3 * math.pi / 4))])
