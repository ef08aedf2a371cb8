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
