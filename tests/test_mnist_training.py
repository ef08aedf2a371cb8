"""Training on real MNIST: MF and BP learn the task (a short run here; the full run is ``slow``)."""
import json

import pytest

from minimf import BackpropNet, MonoForwardNet
from minimf.datasets import MNIST_MEAN, MNIST_STD, load
from minimf.train import main


def standardised(split, n):
    """The first n examples of MNIST's ``split``, flattened and standardised: x (n, 784), y (n,)."""
    data = load("mnist", split, flatten=True)
    return (data.x[:n] - MNIST_MEAN) / MNIST_STD, data.y[:n]


def train(net, x, y, epochs, batch_size=256):
    for _ in range(epochs):
        for start in range(0, len(y), batch_size):
            net.train_step(x[start:start + batch_size], y[start:start + batch_size])


def test_short_mnist_run_mf_and_bp():
    """10,000 training examples (unshuffled), 2 epochs, 784-500-500, on 5,000 test images: both
    rules past 85%, chance being 10%."""
    x, y = standardised("train", 10000)
    x_test, y_test = standardised("test", 5000)
    mf = MonoForwardNet(sizes=[784, 500, 500], seed=0)
    bp = BackpropNet(sizes=[784, 500, 500], seed=0)
    train(mf, x, y, epochs=2)
    train(bp, x, y, epochs=2)
    result = mf.evaluate(x_test, y_test)
    print("MF", result, "BP", bp.evaluate(x_test, y_test))
    assert result["bp"] > 0.85 and result["ff"] > 0.85 and min(result["layers"]) > 0.85
    assert bp.evaluate(x_test, y_test)["acc"] > 0.85


@pytest.mark.slow
def test_paper_setting_twenty_epochs(tmp_path, capsys):
    """The paper's MLP (784-1000-1000, Adam 1e-3, batch 256), 20 epochs on full MNIST with cosine
    decay, through the command line: both prediction modes past 98.4%."""
    assert main(["--epochs", "20", "--lr-schedule", "cosine", "--no-progress", "--out", str(tmp_path)]) == 0
    final = json.loads((tmp_path / "metrics.json").read_text())[-1]
    print(capsys.readouterr().out)
    assert final["test_acc_bp"] > 0.984 and final["test_acc_ff"] > 0.984
