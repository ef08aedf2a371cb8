"""Mono-Forward's layers as Ray actors (minimf/parallel/ray_pipeline.py), on a real local Ray instance
started once for this module (tests/conftest.py: ``ray_cluster``): an MLP's dense layers, a CNN's blocks
and a Mixer's blocks.

Same numbers: the actors run each layer's step with one BLAS thread, so the sequential reference runs
with one BLAS thread too (threadpoolctl), and then the parameters are equal bit for bit.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from minimf import MonoForwardCNN, MonoForwardMixer, MonoForwardNet
from minimf.parallel import ray_pipeline
from minimf.parallel.ray_pipeline import RayPipeline, RayPipelineError
from minimf.train import main
from test_timeline import check_pipeline_order
from training_helpers import parameter_pairs, use_rates

from minimf.parallel.timeline import Timeline

threadpoolctl = pytest.importorskip("threadpoolctl")
STEPS = 6


def make_batches(example_shape, n=STEPS, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, *example_shape)).astype("float32"), rng.integers(0, 10, size))
            for _ in range(n)]


NETS = {
    "mlp": lambda: MonoForwardNet(sizes=[20, 16, 12, 8], num_classes=10, seed=3),
    "cnn-channel-group": lambda: MonoForwardCNN(input_shape=(1, 8, 8), channels=(10, 10), num_classes=10, seed=3,
                                                readout="channel-group"),
    "mixer": lambda: MonoForwardMixer(input_shape=(1, 8, 8), patch=4, width=4, token_hidden=3, channel_hidden=5,
                                      depth=2, num_classes=10, seed=3),
}   # (the projection CNN's blocks run in the threaded pipeline's tests; one of each layer kind here: actors are slow to start)


def sequential(make_net, batches, rates):
    net = use_rates(make_net(), rates)
    with threadpoolctl.threadpool_limits(1):
        losses = [net.train_step(x, y, validate=False) for x, y in batches]
    return net, [[float(v) for v in step] for step in losses]


def assert_identical(net_a, net_b):
    for label, a, b in parameter_pairs(net_a, net_b):
        np.testing.assert_array_equal(b, a, err_msg=label)


@pytest.mark.parametrize("name, per_call", [("mlp", 4), ("mlp", 1), ("mlp", 3), ("cnn-channel-group", 4),
                                            ("mixer", 4)])
def test_actors_train_bit_for_bit_as_the_sequential_run(ray_cluster, name, per_call):
    """Every layer trains the same batches in the same order at the same rates, whether the batches
    travel one per call or in groups (3: a group of 3 and one of 1 in the first chunk)."""
    batches = make_batches(NETS[name]().input_shape)
    rates = [1e-3 * (1 + k) for k in range(STEPS)]
    expected_net, expected = sequential(NETS[name], batches, rates)
    net, timeline = use_rates(NETS[name](), rates), Timeline(len(NETS[name]().layers))
    with RayPipeline(net, timeline=timeline, batches_per_call=per_call) as pipeline:
        first = pipeline.train(batches[:4])          # two chunks: the state comes back between
        second = pipeline.train(batches[4:])
    assert first + second == expected                           # floats compared exactly
    assert_identical(expected_net, net)
    assert all(optimizer.t == STEPS for optimizer in net.optimizers)
    check_pipeline_order(timeline.as_dict(), len(net.layers), STEPS)   # and it ran as a pipeline


def test_a_different_schedule_gives_different_parameters():
    """Not vacuous: the batches in another order (as a pipeline that mixed them up would train)
    give other parameters, so the equality above can fail."""
    batches = make_batches((20,))
    expected_net, _ = sequential(NETS["mlp"], batches, [1e-3] * STEPS)
    other_net, _ = sequential(NETS["mlp"], batches[::-1], [1e-3] * STEPS)
    assert any(not np.array_equal(a, b) for _, a, b in parameter_pairs(expected_net, other_net))


def test_a_bad_batch_is_raised_and_nothing_hangs(ray_cluster):
    batches = make_batches((20,))
    batches[2] = (batches[2][0], np.full(8, 12))                 # label 12 of 10 classes
    one_layer = MonoForwardNet(sizes=[20, 16], num_classes=10)
    with RayPipeline(one_layer) as pipeline, pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        pipeline.train(batches)


def test_a_request_the_cluster_cannot_meet_is_refused_at_once(ray_cluster):
    start = time.perf_counter()
    with pytest.raises(RayPipelineError, match=r"3 layers x 1 GPU each need 3 GPUs; the Ray cluster has 0"):
        with RayPipeline(NETS["mlp"](), gpus_per_layer=1):
            pass
    with pytest.raises(RayPipelineError, match=r"need 300 CPUs"):
        with RayPipeline(NETS["mlp"](), cpus_per_layer=100):
            pass
    assert time.perf_counter() - start < 5


def test_ray_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayPipelineError, match=r'pip install -e ".\[ray\]"'):
        ray_pipeline.import_ray()


QUICK = ["--train-subset", "600", "--test-subset", "200", "--hidden", "32", "24", "--batch-size", "50",
         "--epochs", "2", "--no-progress"]


def runs_equal(folder_a, folder_b):
    metrics = [[{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((f / "metrics.json").read_text())]
               for f in (folder_a, folder_b)]
    assert metrics[0] == metrics[1]
    with np.load(folder_a / "model.npz") as a, np.load(folder_b / "model.npz") as b:
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_killed_worker_is_restarted_from_the_last_checkpoint(ray_cluster, tmp_path, capsys, monkeypatch):
    """``python -m minimf.train --pipeline ray`` whose layer 2 worker process is killed with SIGKILL in
    epoch 2: the run continues from its last checkpoint (step 5 of epoch 2) and ends bit for bit as
    the sequential run (which it would equal anyway: the comparison is the CLI's end to end)."""
    with threadpoolctl.threadpool_limits(1):
        assert main(QUICK + ["--out", str(tmp_path / "sequential")]) == 0
    real_train, calls = RayPipeline.train, {"n": 0}

    def train_then_kill(self, batches, validate=True):
        calls["n"] += 1
        if calls["n"] == 4:                        # epoch 2, after its first --checkpoint-every chunk
            def killing(batches):
                for k, batch in enumerate(batches):
                    if k == 2:
                        self.kill_worker(1)
                    yield batch
            batches = killing(batches)
        return real_train(self, batches, validate)
    monkeypatch.setattr(RayPipeline, "train", train_then_kill)
    code = main(QUICK + ["--pipeline", "ray", "--checkpoint-every", "5", "--out", str(tmp_path / "ray")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "worker died" in err and "continuing from the last checkpoint" in err
    runs_equal(tmp_path / "ray", tmp_path / "sequential")


def test_the_cupy_path_on_actors(ray_cluster, tmp_path, capsys):
    """--backend cupy on the actors (the strict stand-in without a GPU): the sequential cupy run's
    numbers (the fused loss rounds unlike NumPy's reference: tests/test_losses.py)."""
    if not os.environ.get("MINIMF_STRICT_CUPY"):
        pytest.skip("on a GPU machine: see benchmarks/gpu_check.sh")
    with threadpoolctl.threadpool_limits(1):
        assert main(QUICK + ["--backend", "cupy", "--out", str(tmp_path / "sequential")]) == 0
    assert main(QUICK + ["--backend", "cupy", "--pipeline", "ray", "--out", str(tmp_path / "ray")]) == 0
    runs_equal(tmp_path / "ray", tmp_path / "sequential")


@pytest.mark.parametrize("argv, message", [
    (["--ray-address", "auto"], "--ray-address goes with --pipeline ray"),
    (["--pipeline", "ray", "--gpus-per-layer", "1"], "--gpus-per-layer puts the layers on GPUs"),
    (["--pipeline", "ray", "--algo", "bp"], "--pipeline is for --algo mf"),
])
def test_bad_ray_options_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(QUICK + argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_an_unreachable_cluster_is_a_clear_error_within_seconds(tmp_path):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "minimf.train", *QUICK, "--pipeline", "ray",
                           "--ray-address", "127.0.0.1:9", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - start
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert seconds < 30
    assert "cannot start or reach the Ray cluster at '127.0.0.1:9'" in proc.stderr
    assert "Traceback" not in proc.stderr
    print(f"unreachable cluster refused after {seconds:.1f} s")
