"""NumPy against "cupy" from the same host arrays and seeds, for every learning rule in minimf.

"cupy" is real CuPy on a GPU where one exists, and elsewhere minimf's strict CuPy stand-in
(minimf/testing/strict_cupy.py, switched on by conftest.py), so every test here that is not
marked ``gpu`` runs in CI too. On the stand-in the numbers are NumPy's bit for bit, and what these
tests catch there is what the stand-in is strict about: a host array mixed with a device array, an
implicit host conversion, an index that wraps, an array read on a stream or device it was not
written for. On a GPU they also catch cuBLAS and CuPy computing something else.

What is checked, on "cupy" against NumPy:

* every parameter after ``STEPS`` train_steps of every rule (each layer's ``params``: W, b, M;
  the ``state_dict``, which adds FF's read-out and FA/DFA/PEPITA's feedback; the optimisers'
  state), and every step's losses: MLPs, and CNNs on MNIST-sized images (1, 28, 28) whose maps go
  28 -> 14 -> 7 -> 3 (the third block pools an odd map, as the paper's CNN does on MNIST), with
  average and with max pooling;
* the input checks: a NaN or an infinity in x, a label out of range (CuPy wraps such an index
  silently), each a ValueError before any parameter changes;
* saving and loading (``minimf.checkpoint``) into a fresh network, and ``evaluate``;
* the pipeline fed as ``python -m minimf.train --pipeline`` feeds it (batches gathered from device
  arrays with a device index array), against sequential train_steps, and the command line itself;
* a second device (the stand-in has two; real hardware marked ``gpu``).

Tolerances (``TOLERANCE``; a value passes if |cupy - numpy| <= tol * (|numpy| + max |numpy| over
the array), i.e. rtol = atol relative to the array's scale):

* float64: 1e-6. cuBLAS and OpenBLAS add the terms of a product in different orders; in float64
  that changes the 16th digit, and ten steps of Adam keep it many orders of magnitude below 1e-6.
* float32: 1e-4. Adding K terms in another order changes a sum by about sqrt(K) * 6e-8 in
  relative terms; the longest sums here are the first conv block's weight gradient, over
  N * H * W = 8 * 784 = 6,272 terms: ~5e-6. Ten steps, each feeding the next, and Adam's division
  by sqrt(v) (which passes a relative error on unchanged) keep that at the order of 1e-5, 10 times
  below 1e-4; while one Adam step (lr 1e-3 on weights of scale ~0.1-0.5: 2e-3 to 1e-2 of the
  array's scale) is 10-50 times above it, and ``test_the_comparison_sees_one_missing_step``
  checks that every weight array of a network one step behind fails. (CUPY_TF32=1 would make
  float32 products use TF32, 10-bit mantissas, and this tolerance would rightly fail.)

``evaluate`` and predictions are compared exactly, in float64: an argmax may flip on a near tie
between two classes in float32.
"""
import json
import math

import numpy as np
import pytest

from minimf import (BackpropCNN, BackpropNet, DirectFeedbackAlignmentCNN, DirectFeedbackAlignmentNet,
                    FeedbackAlignmentCNN, FeedbackAlignmentNet, ForwardForwardNet, MonoForwardCNN,
                    MonoForwardNet, PepitaNet, ScalableForwardForwardCNN)
from minimf.backend import STRICT_CUPY_VAR, get_array_module, get_backend, to_numpy
from minimf.checkpoint import load, save
from minimf.parallel.pipeline import train_pipelined
from minimf.nn.schedules import Cosine
from minimf.train import main

STEPS = 10
BATCH = 8
CLASSES = 5
SIZES = [20, 16, 12]                  # MLPs: 20 inputs (FF writes the label into the first 5)
IMAGE = (1, 28, 28)                   # MNIST's shape
CHANNELS = (5, 5, 5)                  # maps 28 -> 14 -> 7 -> 3; divisible by 5 for the channel-group read-out
TOLERANCE = {"float64": 1e-6, "float32": 1e-4}
BACKENDS = ("numpy", "cupy")


def mlp(cls):
    def make(backend, dtype="float64", seed=1):
        return cls(sizes=SIZES, num_classes=CLASSES, backend=backend, seed=seed, dtype=dtype)
    return make


def cnn(cls, pool, **extra):
    def make(backend, dtype="float64", seed=1):
        return cls(input_shape=IMAGE, channels=CHANNELS, num_classes=CLASSES, backend=backend, seed=seed,
                   dtype=dtype, pool=pool, **extra)
    return make


MLPS = {"MonoForwardNet": mlp(MonoForwardNet), "BackpropNet": mlp(BackpropNet),
        "ForwardForwardNet": mlp(ForwardForwardNet), "FeedbackAlignmentNet": mlp(FeedbackAlignmentNet),
        "DirectFeedbackAlignmentNet": mlp(DirectFeedbackAlignmentNet), "PepitaNet": mlp(PepitaNet)}
CNN_KINDS = {"MonoForwardCNN": (MonoForwardCNN, {}),
             "MonoForwardCNN-channel-group": (MonoForwardCNN, {"readout": "channel-group"}),
             "BackpropCNN": (BackpropCNN, {}), "FeedbackAlignmentCNN": (FeedbackAlignmentCNN, {}),
             "DirectFeedbackAlignmentCNN": (DirectFeedbackAlignmentCNN, {}),
             "ScalableForwardForwardCNN": (ScalableForwardForwardCNN, {})}
CNNS = {f"{name}-{pool}": cnn(cls, pool, **extra)
        for name, (cls, extra) in CNN_KINDS.items() for pool in ("avg", "max")}
NETWORKS = {**MLPS, **CNNS}
# every rule and read-out once (the CNNs alternate the pooling), for the tests that are not about numbers
ONE_OF_EACH = {**MLPS, **{f"{name}-{pool}": CNNS[f"{name}-{pool}"]
                          for (name, pool) in zip(CNN_KINDS, ["avg", "max"] * 3)}}


# --- helpers --------------------------------------------------------------------------------------

def host_batches(example_shape, steps=STEPS, size=BATCH, dtype="float64", seed=0):
    """``steps`` host batches: x (size, *example_shape) standard normal, y (size,) in [0, CLASSES)."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, *example_shape)).astype(dtype), rng.integers(0, CLASSES, size))
            for _ in range(steps)]


def host_losses(losses):
    """What a train_step returned (a float, a list of floats, 0-d device arrays, ...) as a host vector."""
    items = losses if isinstance(losses, (list, tuple)) else [losses]
    return np.concatenate([np.ravel(to_numpy(v)).astype("float64") for v in items])


def assert_close(actual, expected, tol, label):
    """|actual - expected| <= tol * (|expected| + max |expected|): rtol and atol tol, the atol
    relative to the array's scale (a parameter near 0 is judged by the size of its array)."""
    actual, expected = to_numpy(actual), to_numpy(expected)
    assert actual.shape == expected.shape, f"{label}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale_of(expected), err_msg=label)


def scale_of(array):
    return float(np.max(np.abs(array))) if array.size else 0.0


def named_parameters(net):
    """{label: array} of every layer's ``params`` (None where a layer has no bias)."""
    return {f"layers.{i}.{name}": value for i, layer in enumerate(net.layers)
            for name, value in layer.params.items()}


def optimizer_state(net):
    """{label: array or number}: Adam's t, m and v, SGD's velocity, for every optimiser."""
    state = {}
    for i, opt in enumerate(net.optimizers):
        for attr in ("m", "v", "velocity"):
            for name, value in getattr(opt, attr, {}).items():
                state[f"optimizers.{i}.{attr}.{name}"] = value
        if hasattr(opt, "t"):
            state[f"optimizers.{i}.t"] = np.asarray(opt.t)
    return state


def assert_same_state(net_np, net_cp, tol):
    """Every parameter (``params`` and ``state_dict``) and the optimisers' state agree."""
    assert_same_parameters(net_np, net_cp, tol)
    opt_np, opt_cp = optimizer_state(net_np), optimizer_state(net_cp)
    assert opt_np and sorted(opt_cp) == sorted(opt_np)     # (empty: the optimisers keep their state elsewhere now)
    for key in opt_np:
        assert_close(opt_cp[key], opt_np[key], tol, key)


def assert_same_parameters(net_np, net_cp, tol):
    """Every layer's ``params`` (on the device, of the same dtype) and the ``state_dict`` agree."""
    params_np, params_cp = named_parameters(net_np), named_parameters(net_cp)
    assert params_cp.keys() == params_np.keys()
    for label, value in params_np.items():
        if value is None:
            assert params_cp[label] is None, label
            continue
        assert get_array_module(params_cp[label]) is not np, f"{label} is a host array on the cupy network"
        assert params_cp[label].dtype == value.dtype, label
        assert_close(params_cp[label], value, tol, label)
    state_np, state_cp = net_np.state_dict(), net_cp.state_dict()
    assert sorted(state_cp) == sorted(state_np)
    for key in state_np:
        assert_close(state_cp[key], state_np[key], tol, f"state_dict {key}")


def train(net, batches):
    """train_step on every batch; the losses as host vectors, one per step."""
    return [host_losses(net.train_step(x, y)) for x, y in batches]


def plain(value):
    """An evaluate() result with every number as a Python float (whatever the backend returned)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return float(to_numpy(value))


# --- parity after ten steps -------------------------------------------------------------------------

# every network in float64, both poolings for the CNNs, and every rule and read-out once more in
# float32; SFF with max pooling (the slowest network here, 2 s on the stand-in) in float32 only
PARITY = ([(name, "float64") for name in NETWORKS if name != "ScalableForwardForwardCNN-max"]
          + [(name, "float32") for name in ONE_OF_EACH])


@pytest.mark.parametrize("name, dtype", PARITY)
def test_ten_steps_agree(name, dtype):
    """Same seed, same host batches: every step's losses and, after STEPS steps, every parameter,
    the state_dict and the optimisers' state agree between NumPy and cupy."""
    nets = {backend: NETWORKS[name](backend, dtype) for backend in BACKENDS}
    batches = host_batches(nets["numpy"].input_shape, dtype=dtype)
    losses = {backend: train(net, batches) for backend, net in nets.items()}
    for step, (got, want) in enumerate(zip(losses["cupy"], losses["numpy"]), start=1):
        assert_close(got, want, TOLERANCE[dtype], f"losses of step {step}")
    assert_same_state(nets["numpy"], nets["cupy"], TOLERANCE[dtype])


@pytest.mark.parametrize("name", ["MonoForwardNet", "BackpropCNN-max", "PepitaNet"])
def test_the_comparison_sees_one_missing_step(name):
    """The float32 tolerance is tight enough to see one step: for a cupy network one step behind,
    every weight array W is outside it (not just the optimisers' step counts)."""
    nets = {backend: NETWORKS[name](backend, "float32") for backend in BACKENDS}
    batches = host_batches(nets["numpy"].input_shape, dtype="float32")
    train(nets["numpy"], batches)
    train(nets["cupy"], batches[:-1])
    tol = TOLERANCE["float32"]
    params_np, params_cp = named_parameters(nets["numpy"]), named_parameters(nets["cupy"])
    weights = [label for label in params_np if label.endswith(".W")]
    within = [label for label in weights if np.allclose(to_numpy(params_cp[label]), params_np[label], rtol=tol,
                                                        atol=tol * scale_of(params_np[label]))]
    assert weights and not within, f"one step is within the float32 tolerance for {within}"
    with pytest.raises(AssertionError):
        assert_same_parameters(nets["numpy"], nets["cupy"], tol)


# --- the input checks on cupy -------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("name", ONE_OF_EACH)
def test_a_non_finite_input_is_rejected_on_cupy(name, bad):
    net = ONE_OF_EACH[name]("cupy")
    before = {k: v.copy() for k, v in net.state_dict().items()}
    (x, y), = host_batches(net.input_shape, steps=1)
    x.reshape(-1)[7] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        net.train_step(get_backend("cupy").asarray(x), y)
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=f"{key} changed by a rejected step")


@pytest.mark.parametrize("label", [CLASSES, CLASSES + 7, -1])
@pytest.mark.parametrize("name", ONE_OF_EACH)
def test_a_label_out_of_range_is_rejected_on_cupy(name, label):
    """CuPy wraps an out-of-range index (label 12 of 5 classes reads class 2): only the check stops it."""
    xp = get_backend("cupy")
    net = ONE_OF_EACH[name]("cupy")
    before = {k: v.copy() for k, v in net.state_dict().items()}
    (x, y), = host_batches(net.input_shape, steps=1)
    y[3] = label
    for call in (net.train_step, net.evaluate):
        with pytest.raises(ValueError, match="labels must lie"):
            call(xp.asarray(x), xp.asarray(y))
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=f"{key} changed by a rejected step")


# --- saving, loading, evaluating ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ONE_OF_EACH)
def test_checkpoint_round_trip_on_cupy(name, tmp_path):
    """save() a trained cupy network, load() it into a fresh one (another seed) on cupy and on
    NumPy: the same parameters, on the device, and the same predictions."""
    make = ONE_OF_EACH[name]
    net = make("cupy")
    batches = host_batches(net.input_shape, steps=3)
    train(net, batches)
    save(net, tmp_path / "model.npz")
    x = batches[0][0]
    for backend in BACKENDS:
        fresh = make(backend, seed=2)
        assert any(not np.array_equal(fresh.state_dict()[k], v) for k, v in net.state_dict().items())
        load(fresh, tmp_path / "model.npz")
        for key, value in net.state_dict().items():
            np.testing.assert_array_equal(fresh.state_dict()[key], value, err_msg=f"{backend}: {key}")
        for label, value in named_parameters(fresh).items():
            assert value is None or (get_array_module(value) is np) == (backend == "numpy"), label
        np.testing.assert_array_equal(to_numpy(fresh.predict(x)), to_numpy(net.predict(x)))


@pytest.mark.parametrize("name", ONE_OF_EACH)
def test_evaluate_agrees(name):
    """evaluate() (in batches of 16 over 40 examples: a short last batch) gives the same accuracies
    on both backends, in float64 (no near ties flipping an argmax)."""
    nets = {backend: ONE_OF_EACH[name](backend) for backend in BACKENDS}
    batches = host_batches(nets["numpy"].input_shape, steps=3)
    (x_test, y_test), = host_batches(nets["numpy"].input_shape, steps=1, size=40, seed=5)
    results = {}
    for backend, net in nets.items():
        train(net, batches)
        results[backend] = plain(net.evaluate(x_test, y_test, batch_size=16))
    assert results["cupy"] == results["numpy"]


# --- the pipeline, as the command line feeds it --------------------------------------------------------

PIPELINED = {"MonoForwardNet": MLPS["MonoForwardNet"], "MonoForwardCNN-avg": CNNS["MonoForwardCNN-avg"],
             "MonoForwardCNN-channel-group-max": CNNS["MonoForwardCNN-channel-group-max"]}


def epoch_batches(xp, x, y, order, batch_size=BATCH):
    """As train.py's train_one_epoch: the data and the order on the device, each batch gathered there."""
    x, y, order = xp.asarray(x), xp.asarray(y), xp.asarray(order)
    return ((x[order[s:s + batch_size]], y[order[s:s + batch_size]]) for s in range(0, x.shape[0], batch_size))


def with_cosine(net, steps, lr=1e-3):
    """``net`` with every optimiser on the cosine schedule over ``steps`` steps (as train.py sets it)."""
    for optimizer in net.optimizers:
        optimizer.schedule = Cosine(lr, steps)
    return net


def epoch_data(example_shape, n=5 * BATCH - 3, dtype="float32"):
    """n examples (the last batch short), host arrays, and a shuffled order."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, *example_shape)).astype(dtype)
    return x, rng.integers(0, CLASSES, n), rng.permutation(n)


def sequential_epoch(net, batches):
    """What train.py runs without --pipeline: train_step on every batch, at its schedule's rate."""
    return [host_losses(net.train_step(xb, yb, validate=False)) for xb, yb in batches]


@pytest.mark.parametrize("name", PIPELINED)
def test_pipeline_fed_from_device_arrays_equals_sequential_steps(name):
    """train_pipelined on batches gathered on the device, with a schedule and validate=False (the
    command line checks the data once), against train_step on the same batches on cupy and on
    NumPy (float32, as the command line trains)."""
    make = PIPELINED[name]
    xp = get_backend("cupy")
    x, y, order = epoch_data(make("numpy", "float32").input_shape)
    steps = math.ceil(len(y) / BATCH)
    reference = {"numpy": with_cosine(make("numpy", "float32"), steps),
                 "cupy": with_cosine(make("cupy", "float32"), steps)}
    expected = {backend: sequential_epoch(net, epoch_batches(get_backend(backend), x, y, order))
                for backend, net in reference.items()}
    pipelined = with_cosine(make("cupy", "float32"), steps)
    batches = epoch_batches(xp, x, y, order)
    losses = [host_losses(step) for step in train_pipelined(pipelined, batches, validate=False)]
    assert len(losses) == steps
    tol = TOLERANCE["float32"]
    for backend, want in expected.items():
        for step, (got, wanted) in enumerate(zip(losses, want), start=1):
            assert_close(got, wanted, tol, f"pipelined vs sequential on {backend}, losses of step {step}")
        assert_same_state(reference[backend], pipelined, tol)


def test_command_line_pipeline_on_cupy_gives_the_same_run(tmp_path, capsys):
    """``python -m minimf.train --backend cupy --pipeline`` against the same run without --pipeline
    and against NumPy: the metrics and the saved parameters."""
    quick = ["--train-subset", "600", "--test-subset", "300", "--hidden", "24", "16", "--epochs", "2",
             "--lr-schedule", "cosine", "--no-progress"]
    runs = {"numpy": ["--backend", "numpy"], "cupy": ["--backend", "cupy"],
            "cupy-pipelined": ["--backend", "cupy", "--pipeline"]}
    for name, extra in runs.items():
        assert main(quick + extra + ["--out", str(tmp_path / name)]) == 0
    capsys.readouterr()
    metrics = {name: [{k: v for k, v in record.items() if k != "seconds"}
                      for record in json.loads((tmp_path / name / "metrics.json").read_text())] for name in runs}
    models = {name: np.load(tmp_path / name / "model.npz") for name in runs}
    for name in ("cupy", "cupy-pipelined"):
        assert len(metrics[name]) == len(metrics["numpy"])
        for got, want in zip(metrics[name], metrics["numpy"]):
            assert got.keys() == want.keys()
            for key, value in want.items():
                if key == "train_loss":
                    assert_close(np.asarray(got[key]), np.asarray(value), TOLERANCE["float32"], f"{name} {key}")
                else:   # the epoch, and accuracies on 300 examples: a near tie may flip in float32
                    np.testing.assert_allclose(got[key], value, rtol=0, atol=2 / 300, err_msg=f"{name} {key}")
        assert sorted(models[name].files) == sorted(models["numpy"].files)
        for key in models["numpy"].files:
            assert_close(models[name][key], models["numpy"][key], TOLERANCE["float32"], f"{name} {key}")


# --- a second device ----------------------------------------------------------------------------------

def check_pipeline_on_device_1(xp, make):
    """Build the network inside ``with Device(1):``, move the data there, train it with the
    pipeline; the parameters stay on device 1 and equal a sequential NumPy run's."""
    x, y, order = epoch_data(make("numpy", "float32").input_shape)
    steps = math.ceil(len(y) / BATCH)
    reference = with_cosine(make("numpy", "float32"), steps)
    sequential_epoch(reference, epoch_batches(np, x, y, order))
    with xp.cuda.Device(1):
        net = with_cosine(make("cupy", "float32"), steps)
        train_pipelined(net, epoch_batches(xp, x, y, order), validate=False)
        for label, value in named_parameters(net).items():
            assert value is None or value.device.id == 1, f"{label} left device 1"
    assert xp.cuda.Device().id == 0
    with xp.cuda.Device(1):
        assert_same_state(reference, net, TOLERANCE["float32"])


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["MonoForwardNet", "MonoForwardCNN-avg"])
def test_pipeline_on_a_second_gpu(name):
    cupy = get_backend("cupy")
    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two CUDA devices")
    check_pipeline_on_device_1(cupy, PIPELINED[name])


@pytest.mark.parametrize("name", ["MonoForwardNet", "MonoForwardCNN-avg"])
def test_pipeline_on_the_stand_ins_second_device(name, monkeypatch):
    """The same on the stand-in's second device (it models CUDA's per-thread current device, and
    refuses an array used from a thread whose current device is another), on any machine."""
    monkeypatch.setenv(STRICT_CUPY_VAR, "1")
    xp = get_backend("cupy")
    if xp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("MINIMF_STRICT_CUPY_DEVICES gives the stand-in a single device")
    check_pipeline_on_device_1(xp, PIPELINED[name])


# --- what needs the real hardware ---------------------------------------------------------------------

@pytest.mark.gpu
def test_the_cupy_backend_is_real_cupy_on_a_gpu():
    """On a GPU machine the tests above ran on CuPy itself, not the stand-in."""
    xp = get_backend("cupy")
    assert xp.__name__ == "cupy"
    net = MLPS["MonoForwardNet"]("cupy")
    assert type(net.layers[0].W).__module__.startswith("cupy")
