"""The pipelined Mono-Forward trainer (minimf/parallel/pipeline.py) against the sequential one.

Same schedule, same numbers: after N batches through ``train_pipelined`` every parameter equals,
bit for bit, the one after N calls of ``train_step``; the layers really run at the same time; an
error in a layer or in a batch is raised, with no thread left hanging.
"""
import json
import threading

import numpy as np
import pytest
import training_helpers
from training_helpers import parameter_pairs, sequential_run, use_rates

from minimf import MonoForwardCNN, MonoForwardNet
from minimf.backend import get_backend, to_numpy
from minimf.parallel.pipeline import train_pipelined
from minimf.train import main

STEPS = 7


def mlp(backend="numpy"):
    return MonoForwardNet(sizes=[20, 16, 12, 8], num_classes=5, backend=backend, seed=3)


def cnn(backend="numpy"):
    return MonoForwardCNN(input_shape=(1, 8, 8), channels=(3, 4), num_classes=5, backend=backend, seed=3)


def make_batches(example_shape, n=STEPS, size=6, seed=0):
    """n host batches of ``size`` examples: float32 x (size, *example_shape), labels in [0, 5)."""
    return training_helpers.make_batches(example_shape, n, size, seed)


def assert_identical_parameters(net_a, net_b):
    for label, a, b in parameter_pairs(net_a, net_b):
        np.testing.assert_array_equal(to_numpy(b), to_numpy(a), err_msg=label)


@pytest.mark.parametrize("make_net, example_shape", [(mlp, (20,)), (cnn, (1, 8, 8))])
def test_pipeline_equals_sequential_bit_for_bit(make_net, example_shape):
    batches = make_batches(example_shape)
    rates = [1e-3 * (1 + k) for k in range(STEPS)]    # a schedule: every batch its own lr
    sequential, pipelined = make_net(), make_net()
    expected = sequential_run(sequential, batches, rates)
    losses = train_pipelined(use_rates(pipelined, rates), batches)
    assert losses == expected                         # floats compared exactly
    assert_identical_parameters(sequential, pipelined)
    assert all(opt.t == STEPS for opt in pipelined.optimizers)


def test_a_different_schedule_gives_different_parameters():
    """The equality above is not vacuous: feeding the layers the batches in another order (as a
    wrong pipeline that mixed batches up would) changes the parameters."""
    batches = make_batches((20,))
    reference, shuffled = mlp(), mlp()
    train_pipelined(reference, batches)
    train_pipelined(shuffled, batches[1:] + batches[:1])
    with pytest.raises(AssertionError):
        assert_identical_parameters(reference, shuffled)


def test_layers_run_concurrently():
    """Layer 2 holds batch 1 until layer 1 has STARTED batch 2. Taking turns (layer 1 on batch 2
    only after layer 2 is done with batch 1) could never get past this: the wait would time out."""
    net = mlp()
    layer1_on_batch2 = threading.Event()
    seen = {"layer1": 0, "layer2": 0}
    first, second = net.layers[0], net.layers[1]
    forward1, forward2 = first.local_gradients, second.local_gradients

    def layer1(x, y, **options):
        seen["layer1"] += 1
        if seen["layer1"] == 2:
            layer1_on_batch2.set()
        return forward1(x, y, **options)

    def layer2(x, y, **options):
        seen["layer2"] += 1
        if seen["layer2"] == 1:
            assert layer1_on_batch2.wait(timeout=10), "layer 1 never started batch 2 while layer 2 held batch 1"
        return forward2(x, y, **options)

    first.local_gradients, second.local_gradients = layer1, layer2
    train_pipelined(net, make_batches((20,), n=3))
    assert seen == {"layer1": 3, "layer2": 3}


def test_an_error_in_a_layer_is_raised_and_every_thread_ends():
    net = mlp()

    def broken(x, y, **options):
        raise RuntimeError("layer 2 broke")

    net.layers[1].local_gradients = broken
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="layer 2 broke"):
        train_pipelined(net, make_batches((20,), n=5))
    assert threading.active_count() == before


def test_a_bad_batch_is_a_clear_error():
    net = mlp()
    batches = make_batches((20,), n=3)
    batches[1] = (batches[1][0], np.full(6, 9))          # label 9 of 5 classes
    before = threading.active_count()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        train_pipelined(net, batches)
    assert threading.active_count() == before


@pytest.mark.gpu
def test_pipeline_equals_sequential_on_cupy():
    """On the GPU each layer queues its work on its own CUDA stream; the results must not change
    beyond float rounding. (Not bit for bit: cuBLAS promises bitwise reproducibility only with one
    active stream, unless CUBLAS_WORKSPACE_CONFIG is set.)"""
    cupy = get_backend("cupy")
    batches = [(cupy.asarray(x), cupy.asarray(y)) for x, y in make_batches((20,))]
    sequential, pipelined = mlp("cupy"), mlp("cupy")
    expected = [[float(v) for v in sequential.train_step(x, y)] for x, y in batches]
    losses = [[float(v) for v in step] for step in train_pipelined(pipelined, batches)]   # 0-d device arrays
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    for a, b in zip(sequential.layers, pipelined.layers):
        for name, value in a.params.items():
            np.testing.assert_allclose(to_numpy(b.params[name]), to_numpy(value), rtol=1e-4, atol=1e-6)


def fed_as_train_feeds_it(xp, batches, seed=0):
    """The batches as ``python -m minimf.train`` feeds them: the whole data set and a shuffled
    order copied to the device (on the caller's default stream, nothing waited for), each batch
    gathered from them by the pipeline's feeding thread."""
    x_all = xp.asarray(np.concatenate([x for x, _ in batches]))
    y_all = xp.asarray(np.concatenate([y for _, y in batches]))
    order = xp.asarray(np.random.default_rng(seed).permutation(len(y_all)))
    size = len(batches[0][1])
    return [(x_all, y_all, order[s:s + size]) for s in range(0, len(y_all), size)]


def gathered(fed):
    return ((x_all[idx], y_all[idx]) for x_all, y_all, idx in fed)


def test_pipeline_waits_for_the_callers_copies(backend):
    """Bug 1 of issue 15: the data set, the batch order and the initial weights are copied on the
    caller's stream; the pipeline's threads read them on streams of their own, which must first wait
    for those copies. On the strict stand-in, reading them unwaited raises StreamOrderError."""
    xp = get_backend(backend)
    pipelined = mlp(backend)                       # initial weights copied on the default stream
    fed = fed_as_train_feeds_it(xp, make_batches((20,)))
    losses = train_pipelined(pipelined, gathered(fed), validate=False)
    sequential = mlp(backend)
    expected = [sequential.train_step(x, y) for x, y in gathered(fed)]
    np.testing.assert_allclose(np.array([[float(v) for v in step] for step in losses]),
                               np.array([[float(v) for v in step] for step in expected]), rtol=1e-5)
    for label, a, b in parameter_pairs(sequential, pipelined):
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=1e-4, atol=1e-6, err_msg=label)


def test_pipeline_runs_on_the_callers_device():
    """Bug 2 of issue 15: CUDA's current device is per thread and new threads start on device 0;
    the pipeline's threads must work on the device the caller's arrays live on."""
    cupy = get_backend("cupy")
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs a second CUDA device")
    with cupy.cuda.Device(1):
        pipelined, sequential = mlp("cupy"), mlp("cupy")
        fed = fed_as_train_feeds_it(cupy, make_batches((20,)))
        train_pipelined(pipelined, gathered(fed), validate=False)
        for x, y in gathered(fed):
            sequential.train_step(x, y)
        assert pipelined.layers[0].W.device.id == 1
        for label, a, b in parameter_pairs(sequential, pipelined):
            np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=1e-4, atol=1e-6, err_msg=label)


def test_command_line_pipeline_gives_the_same_run(tmp_path, capsys):
    """``python -m minimf.train --pipeline`` (with a cosine schedule): metrics and saved parameters
    equal to the run without it."""
    quick = ["--train-subset", "1000", "--test-subset", "500", "--hidden", "32", "24", "--epochs", "2",
             "--lr-schedule", "cosine", "--no-progress"]
    for name, extra in (("sequential", []), ("pipelined", ["--pipeline"])):
        assert main(quick + extra + ["--out", str(tmp_path / name)]) == 0
    runs = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("sequential", "pipelined")}
    for record in runs.values():
        for r in record:
            r.pop("seconds")
    assert runs["pipelined"] == runs["sequential"]
    saved = [np.load(tmp_path / name / "model.npz") for name in ("sequential", "pipelined")]
    assert sorted(saved[0].files) == sorted(saved[1].files)
    for key in saved[0].files:
        np.testing.assert_array_equal(saved[1][key], saved[0][key])


def test_command_line_pipeline_is_for_mono_forward_only(capsys):
    with pytest.raises(SystemExit):
        main(["--algo", "bp", "--pipeline"])
    assert "--pipeline is for --algo mf" in capsys.readouterr().err


def test_a_global_credit_network_is_refused_by_every_layer_parallel_trainer():
    """Its layers need the error from above: run on their own losses they would quietly train
    the local rule. The pipelines and the unit split refuse it; plain MF passes the same check."""
    from minimf import MonoForwardGlobalNet, MonoForwardNet
    from minimf.parallel.ray_pipeline import RayPipeline
    from minimf.parallel.unit_split import train_unit_split
    x, y = np.zeros((4, 6), dtype="float32"), np.arange(4)
    net = MonoForwardGlobalNet(sizes=[6, 5, 5], num_classes=4, seed=0)
    with pytest.raises(ValueError, match="MonoForwardGlobalNet cannot be trained by the pipeline"):
        train_pipelined(net, [(x, y)])
    with pytest.raises(ValueError, match="cannot be trained by the Ray pipeline"):
        RayPipeline(net)
    with pytest.raises(ValueError, match="cannot be trained by the unit split"):
        train_unit_split(net, [(x, y)], threads=2)
    train_pipelined(MonoForwardNet(sizes=[6, 5, 5], num_classes=4, seed=0), [(x, y)])   # the local rule passes
