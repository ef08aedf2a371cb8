"""The strict CuPy stand-in (minimf/testing/strict_cupy.py): each strict rule catches the bug it is for.

These tests are about the stand-in itself, so they import it directly (training code never does)."""
import threading

import numpy as np
import pytest

from minimf.testing import strict_cupy as cp


def host_array(*shape):
    return np.arange(np.prod(shape), dtype="float64").reshape(shape)


# -- no implicit host conversion --------------------------------------------------------------------

@pytest.mark.parametrize("mix", [
    lambda x: np.asarray(x),                      # the classic: a device array handed to NumPy
    lambda x: np.exp(x),                          # a NumPy ufunc on a device array (np. instead of xp.)
    lambda x: np.sum(x),                          # a NumPy function on a device array
    lambda x: x + np.ones(3),                     # an operator with a host array on the right ...
    lambda x: np.ones(3) + x,                     # ... and on the left
    lambda x: cp.concatenate([x, np.ones((2, 3))]),   # a host array among a function's arguments
    lambda x: x.__setitem__(0, np.ones(3)),        # a host array written into a device array
])
def test_host_and_device_arrays_do_not_mix(mix):
    x = cp.asarray(host_array(2, 3))
    with pytest.raises(TypeError):
        mix(x)


def test_host_and_device_meet_through_asarray_and_get():
    a = host_array(2, 3)
    x = cp.asarray(a)
    assert isinstance(x, cp.ndarray)
    back = x.get()
    assert isinstance(back, np.ndarray) and (back == a).all()
    assert (cp.asnumpy(x * 2) == 2 * a).all()
    assert ((np.float32(2) * x).get() == 2 * a).all()    # a NumPy scalar is fine, as on CuPy


# -- reductions stay on the device; every transfer to the host is counted ------------------------------

def test_reductions_return_device_arrays_without_a_sync():
    x = cp.asarray(host_array(4, 5))
    before = cp.host_syncs()
    total, top, where = x.sum(), x.max(axis=1), x.argmax()
    assert all(isinstance(v, cp.ndarray) for v in (total, top, where)) and total.shape == ()
    assert cp.host_syncs() == before


@pytest.mark.parametrize("transfer", [float, int, bool, lambda v: v.item(), lambda v: v.get(),
                                      lambda v: v.tolist(), str, repr, lambda v: f"{v:.2f}"])
def test_every_transfer_to_the_host_is_counted(transfer):
    total = cp.asarray(host_array(3)).sum()
    before = cp.host_syncs()
    transfer(total)
    assert cp.host_syncs() == before + 1


def test_a_boolean_mask_index_is_a_sync():
    """The size of x[mask] is the count of True values, which the host must read first."""
    x = cp.asarray(host_array(6))
    before = cp.host_syncs()
    x[x > 2]
    assert cp.host_syncs() == before + 1


def test_kernel_launches_are_counted_and_a_fused_function_is_one():
    x, y = cp.asarray(host_array(5)), cp.asarray(host_array(5))

    def axpy_twice(x, y):
        x += 2 * y
        x += 2 * y

    before = cp.kernel_launches()
    axpy_twice(x, y)
    unfused = cp.kernel_launches() - before
    before = cp.kernel_launches()
    cp.fuse()(axpy_twice)(x, y)
    assert (unfused, cp.kernel_launches() - before) == (4, 1)
    assert (x.get() == 9 * host_array(5)).all()    # the fused function ran as it is


# -- streams ------------------------------------------------------------------------------------------

def test_reading_on_a_non_blocking_stream_before_the_writer_is_waited_for_raises():
    """The race of bug 1: data copied on the default stream, read on a worker's own stream."""
    x = cp.asarray(host_array(3))            # written on the null stream, no one has waited
    worker = cp.cuda.Stream(non_blocking=True)
    with worker, pytest.raises(cp.StreamOrderError, match="null stream.*stream .* \\(non-blocking\\)"):
        x + 1


@pytest.mark.parametrize("wait", ["synchronize", "event", "device"])
def test_a_wait_makes_the_read_safe(wait):
    x = cp.asarray(host_array(3))
    worker = cp.cuda.Stream(non_blocking=True)
    if wait == "synchronize":
        cp.cuda.Stream.null.synchronize()
    elif wait == "event":
        worker.wait_event(cp.cuda.Stream.null.record())
    else:
        cp.cuda.Device().synchronize()
    with worker:
        y = x + 1
    with pytest.raises(cp.StreamOrderError):   # and the other way round: y is the worker's
        y * 2
    worker.synchronize()
    assert (y * 2).get().tolist() == [2.0, 4.0, 6.0]


def test_a_blocking_stream_is_ordered_with_the_null_stream():
    """CuPy's Stream() (non_blocking=False) waits for the legacy default stream: no error."""
    x = cp.asarray(host_array(3))
    with cp.cuda.Stream():
        y = x + 1
    assert (y + x).get().tolist() == [1.0, 3.0, 5.0]


def test_writing_through_a_view_counts_as_writing_the_array():
    x = cp.asarray(host_array(2, 3))
    cp.cuda.Stream.null.synchronize()
    worker = cp.cuda.Stream(non_blocking=True)
    with worker:
        view = x.reshape(-1)[2:4]
        view *= 10
    with pytest.raises(cp.StreamOrderError):
        x.sum()


# -- devices ------------------------------------------------------------------------------------------

def test_the_current_device_is_per_thread():
    """Bug 2: a new thread starts on device 0, whatever the thread that started it uses."""
    with cp.cuda.Device(1):
        x = cp.zeros(3)
        seen = {}
        thread = threading.Thread(target=lambda: seen.update(device=cp.cuda.Device().id))
        thread.start()
        thread.join()
        assert seen["device"] == 0 and cp.cuda.Device().id == 1
        assert (x + 1).device.id == 1
    with pytest.raises(ValueError, match=r"resides \(1\) is different from the current device \(0\)"):
        x + 1


def test_an_unknown_device_is_an_error():
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="invalid device ordinal"):
        cp.cuda.Device(cp.cuda.runtime.getDeviceCount())


# -- indices wrap, as CuPy's do -----------------------------------------------------------------------

def test_out_of_range_integer_indices_wrap():
    """A label 12 of 10 classes reads class 2 on CuPy; NumPy would raise. Only a label check catches it."""
    scores = cp.asarray(host_array(2, 10))
    labels = cp.asarray(np.array([12, -1]))
    assert scores[cp.arange(2), labels].get().tolist() == [2.0, 19.0]
    with pytest.raises(IndexError):
        host_array(2, 10)[np.arange(2), np.array([12, -1])]


# -- memory -------------------------------------------------------------------------------------------

def test_an_allocation_above_the_limit_is_out_of_memory(monkeypatch):
    monkeypatch.setenv("MINIMF_STRICT_CUPY_MAX_BYTES", "1000")
    cp.zeros(100)                                   # 800 bytes
    with pytest.raises(cp.cuda.memory.OutOfMemoryError, match="Out of memory allocating 8,000 bytes"):
        cp.zeros(1000)


# -- strict where CuPy is: what it lacks, its signatures, its fuse (issue 28) ---------------------------

def test_a_device_array_is_not_a_python_integer():
    """CuPy's ndarray has no __index__: range(), list indexing and operator.index refuse it."""
    n = cp.asarray(np.array(3))
    for use in (lambda: range(n), lambda: [1, 2, 3, 4][n], lambda: "ab" * n):
        with pytest.raises(TypeError):
            use()
    assert int(n) == 3                                   # int() is there: a counted sync


def test_matmul_assignment_makes_a_new_array():
    """CuPy has no __imatmul__: ``a @= b`` computes a @ b into a new array and rebinds a."""
    a = cp.asarray(np.eye(2))
    b = cp.asarray(2 * np.eye(2))
    before = a
    a @= b
    assert a is not before and (before.get() == np.eye(2)).all() and (a.get() == 2 * np.eye(2)).all()


def test_as_strided_takes_only_cupys_arguments():
    x = cp.zeros(4)
    assert cp.lib.stride_tricks.as_strided(x, shape=(2,), strides=(16,)).shape == (2,)
    for extra in ({"subok": False}, {"writeable": False}):
        with pytest.raises(TypeError):
            cp.lib.stride_tricks.as_strided(x, shape=(2,), strides=(16,), **extra)


def test_devices_streams_and_events_are_under_cuda_only():
    for name in ("Device", "Stream", "Event", "get_current_stream", "OutOfMemoryError"):
        assert not hasattr(cp, name)
    assert cp.cuda.Device(0).id == 0 and cp.cuda.get_current_stream() is cp.cuda.Stream.null


@pytest.mark.parametrize("call", [
    lambda: cp.zeros(3, like=None),                     # NumPy keywords CuPy lacks
    lambda: cp.exp(cp.zeros(3), where=True),
    lambda: cp.zeros(3).sum(initial=0),
    lambda: cp.zeros(3).max(0, None, False, 1),          # more positional arguments than CuPy takes
    lambda: cp.arange(),                                # CuPy's requires start
    lambda: cp.zeros(3).astype(),                        # and dtype
])
def test_calls_cupys_signatures_refuse_are_refused(call):
    with pytest.raises(TypeError):
        call()


def test_set_copies_only_an_array_of_the_same_dtype_and_shape():
    x = cp.zeros((2, 3))
    x.set(np.ones((2, 3)))
    assert x.get().sum() == 6
    with pytest.raises(TypeError):
        x.set(np.ones((2, 3), dtype="float32"))
    with pytest.raises(ValueError):
        x.set(np.ones(6))


def test_flags_are_cupys_three():
    flags = cp.zeros((2, 3)).T.flags
    assert (flags.c_contiguous, flags.f_contiguous, flags["C_CONTIGUOUS"]) == (False, True, False)
    assert not hasattr(flags, "writeable")


@pytest.mark.parametrize("body, error", [
    (lambda x, y: x if x > 0 else y, "Cannot convert to Python scalar in cupy.fuse"),    # control flow
    (lambda x, y: x * float(y), "Cannot convert to Python scalar in cupy.fuse"),        # a host read
    (lambda x, y: x * x.shape[0], "shape"),
    (lambda x, y: x[0] * y, "indexing"),
    (lambda x, y: x * CAPTURED, "through its arguments"),                              # an array not passed
])
def test_fuse_refuses_what_cupys_tracer_refuses(body, error):
    with pytest.raises((TypeError, NotImplementedError), match=error):
        cp.fuse()(body)(cp.ones(3), cp.ones(3))


CAPTURED = cp.ones(3)


def test_a_fused_function_writes_in_place_returns_new_arrays_and_inlines_fused_calls():
    @cp.fuse()
    def double(x):
        return x * 2

    @cp.fuse(kernel_name="step")
    def step(p, g, v, mu):
        v *= mu
        v += double(g)                          # a fused function inside another joins its kernel
        p[...] = p - v
        return cp.sqrt(cp.maximum(p, 0)) + cp.where(p > 0, p, 0)

    p, g, v = (cp.asarray(np.full(3, value)) for value in (9.0, 1.0, 2.0))
    launches = cp.kernel_launches()
    out = step(p, g, v, np.float64(0.5))
    assert cp.kernel_launches() - launches == 1 and step.name == "step"
    assert v.get().tolist() == [3.0] * 3 and p.get().tolist() == [6.0] * 3
    assert out.get().tolist() == [6.0 ** 0.5 + 6.0] * 3 and out is not p
    assert double(3.0) == 6.0                   # no device array: the plain Python function, no launch


# -- kernel launches: CuPy's, operation by operation (the models in minimf/testing/strict_cupy.py) --------

def launches(work):
    before = cp.kernel_launches()
    work()
    return cp.kernel_launches() - before


@pytest.mark.parametrize("name, work, expected", [
    ("element-wise", lambda x, y, i: x * 2 + 1, 2),
    ("in place", lambda x, y, i: x.__iadd__(1), 1),
    ("a view", lambda x, y, i: x.reshape(-1)[2:5][::2].T, 0),
    ("a reshape that copies", lambda x, y, i: x.T.reshape(-1), 1),
    ("zeros: a memset", lambda x, y, i: cp.zeros((5, 8)), 1),
    ("empty: an allocation", lambda x, y, i: cp.empty((5, 8)), 0),
    ("a host-to-device copy", lambda x, y, i: cp.asarray(np.ones(3)), 1),
    ("astype to the same dtype, copy=False", lambda x, y, i: x.astype(x.dtype, copy=False), 0),
    ("astype copies by default", lambda x, y, i: x.astype(x.dtype), 1),
    ("a gather with one integer array: take", lambda x, y, i: x[i], 1),
    ("a gather with two integer arrays", lambda x, y, i: x[i, i], 4),
    ("a[rows, y] -= 1: gather, subtract, scatter", lambda x, y, i: x.__setitem__((i, i), x[i, i] - 1), 9),
    ("a scatter of a Python scalar: copied to the device first", lambda x, y, i: x.__setitem__(i, 0.0), 2),
    ("a[s] += v writes its own view back: one kernel", lambda x, y, i: x.__setitem__(
        slice(1, 3), x[1:3].__iadd__(1)), 1),
    ("a boolean mask: a scan and a gather", lambda x, y, i: x[x > 0], 3),
    ("max over the last axis: CUB segmented", lambda x, y, i: x.max(axis=1, keepdims=True), 1),
    ("sum over the first axis: CuPy's reduction kernel", lambda x, y, i: x.sum(axis=0), 1),
    ("a small full sum: CUB, one tile", lambda x, y, i: x.sum(), 1),
    ("a large full sum: CUB, two passes", lambda x, y, i: cp.zeros(5000, dtype="float32").sum(), 1 + 2),
    ("a mean: CUB and a divide", lambda x, y, i: x.mean(), 2),
    ("a mean with a dtype: and a copy", lambda x, y, i: x.mean(dtype="float64"), 3),
    ("a full sum of booleans: CUB's two-pass block reduction", lambda x, y, i: cp.zeros(200, dtype=bool).sum(),
     1 + 2),
    ("argmax over an axis", lambda x, y, i: x.argmax(axis=1), 1),
    ("var: a mean (and its cast) and one reduction", lambda x, y, i: x.var(axis=1), 4),
    ("a matrix product: one cuBLAS call", lambda x, y, i: x @ y, 1),
    ("a product with a transposed operand: no copy", lambda x, y, i: y.T @ x.T, 1),
    ("a product with a strided operand: a copy first", lambda x, y, i: x[:, ::2] @ y[:4], 2),
    ("a stack (a memset) against a matrix: pointer arrays and a batched gemm",
     lambda x, y, i: cp.matmul(cp.zeros((2, 5, 8)), y), 1 + 3 + 1),
    ("concatenate two arrays: a copy each", lambda x, y, i: cp.concatenate([x, x]), 2),
    ("concatenate nine small arrays: their pointers copied, one kernel",
     lambda x, y, i: cp.concatenate([x] * 9), 2),
    ("pad with zeros: a fill and a copy", lambda x, y, i: cp.pad(x, 1), 2),
    ("a fused function", lambda x, y, i: cp.fuse()(lambda a: a * a + 1)(x), 1),
])
def test_kernel_launches_are_cupys(name, work, expected):
    x = cp.asarray(np.arange(40.0).reshape(5, 8) - 3)
    y = cp.asarray(np.ones((8, 6)))
    i = cp.asarray(np.array([0, 2, 4]))
    assert launches(lambda: work(x, y, i)) == expected, name


def test_launch_record_names_each_operation():
    x = cp.asarray(np.arange(6.0).reshape(2, 3))
    rows, labels = cp.arange(2), cp.asarray(np.array([0, 2]))
    with cp.launch_record() as record:
        x[rows, labels] -= 1
    assert record == [("gather with 2 integer arrays", 4), ("__isub__", 1), ("scatter with 2 integer arrays", 4)]


def test_an_mf_and_a_bp_training_step_launch_counts():
    """Issue 28's step, MF and BP 784-1000-1000, batch 256, float32, Adam, validate=False: 22 and 24
    launches on CuPy with the fused paths (76 and 51 before them; issue 28's target: at most 24). Per
    MF layer 11: five products, bias + ReLU, the loss's row kernel and its sum, the ReLU mask, db's
    sum and one Adam pass over the flat parameters. The widths change no count (they enter only
    through CUB's tile of 4096 values and the 128 of its block reduction, which the batch and the
    10 classes decide), so 784-64-64 counts the same, 20 times faster. Printed with -s."""
    from minimf import BackpropNet, MonoForwardNet
    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((256, 784)).astype("float32"))
    y = cp.asarray(rng.integers(0, 10, 256))
    for net_class, at_most in ((MonoForwardNet, 22), (BackpropNet, 24)):
        net = net_class(sizes=[784, 64, 64], num_classes=10, backend="cupy", seed=0)
        net.train_step(x, y, validate=False)               # the optimiser's state is made in the first step
        syncs = cp.host_syncs()
        count = launches(lambda: net.train_step(x, y, validate=False))
        print(f"{net_class.__name__}: {count} launches, {cp.host_syncs() - syncs} host syncs per step")
        assert count <= at_most and cp.host_syncs() == syncs
