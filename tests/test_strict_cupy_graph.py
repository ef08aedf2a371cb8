"""CUDA graphs on the strict CuPy stand-in (minimf/testing/strict_cupy.py): stream capture records,
``Graph.launch`` replays, and what CuPy or CUDA refuses during a capture is refused.

Each test holds one rule of the model; the rules are in the stand-in's module docstring and in
``_Capture``. These tests are about the stand-in itself, so they import it directly."""
import threading

import numpy as np
import pytest

from minimf.testing import strict_cupy as sc

CUDARuntimeError = sc.cuda.runtime.CUDARuntimeError


def on_device(*host_arrays):
    """Device copies of ``host_arrays``, with the null stream (which wrote them) waited for."""
    arrays = [sc.asarray(h) for h in host_arrays]
    sc.cuda.Stream.null.synchronize()
    return arrays if len(arrays) > 1 else arrays[0]


def capture(stream, work, pool):
    """(graph, what ``work()`` returned), ``work`` captured on ``stream`` with ``pool``'s memory."""
    with sc.cuda.using_allocator(pool.malloc), stream:
        stream.begin_capture()
        try:
            out = work()
        finally:
            graph = stream.end_capture()
    return graph, out


@pytest.fixture
def stream():
    return sc.cuda.Stream(non_blocking=True)


@pytest.fixture(autouse=True)
def no_capture_left_open():
    """A test that fails inside a capture leaves it open; end it, so that the next test starts clean."""
    yield
    for capture in list(sc._captures):
        try:
            capture.stream.end_capture()
        except RuntimeError:
            pass


@pytest.fixture
def pool():
    return sc.cuda.MemoryPool()


# -- capture records, launch replays ----------------------------------------------------------------

def test_a_capture_runs_nothing_and_each_launch_runs_it_once_on_the_arrays_current_values(stream, pool):
    a, b, c = on_device(np.arange(4.0), np.ones(4), np.full(4, 10.0))
    launches, syncs = sc.kernel_launches(), sc.host_syncs()

    def step():
        nonlocal c
        y = a * 3 + b
        c += y
        return y
    graph, y = capture(stream, step, pool)

    assert (sc.kernel_launches(), sc.host_syncs()) == (launches, syncs)          # nothing ran
    assert c.get().tolist() == [10.0] * 4                                       # c as it was
    assert np.isnan(y.get()).all()                                               # y made, never written
    with sc.launch_record() as record:
        graph.launch(stream)
    assert record == [("graph launch", 1)] and sc.host_syncs() == syncs + 2      # the 2 get()s above
    stream.synchronize()
    assert y.get().tolist() == [1.0, 4.0, 7.0, 10.0]
    assert c.get().tolist() == [11.0, 14.0, 17.0, 20.0]

    with stream:
        a += 1                             # outside the capture: the next launch reads the new a
    graph.launch(stream)
    stream.synchronize()
    assert y.get().tolist() == [4.0, 7.0, 10.0, 13.0]
    assert c.get().tolist() == [15.0, 21.0, 27.0, 33.0]                          # c grew twice


def test_a_graph_launches_on_another_stream_and_orders_as_one_operation_there(stream, pool):
    a = on_device(np.arange(3.0))
    graph, y = capture(stream, lambda: a * 2, pool)
    other = sc.cuda.Stream(non_blocking=True)
    graph.launch(other)
    with pytest.raises(sc.StreamOrderError, match="stream .* was read on the null stream"):
        y + 1                              # the graph wrote y on `other`, which nobody waited for
    other.synchronize()
    assert (y + 1).get().tolist() == [1.0, 3.0, 5.0]


def test_a_launch_reading_what_another_stream_wrote_unwaited_raises(stream, pool):
    a, c = on_device(np.arange(3.0), np.zeros(3))
    graph, _ = capture(stream, lambda: c.__iadd__(a), pool)
    a += 1                                 # on the null stream, after the capture
    with pytest.raises(sc.StreamOrderError, match="null stream was read on stream"):
        graph.launch(stream)
    stream.wait_event(sc.cuda.Stream.null.record())
    graph.launch(stream)
    stream.synchronize()
    assert c.get().tolist() == [1.0, 2.0, 3.0]


def fused_sgd(p, g, lr):
    p -= lr * g
    return p * p


FUSED_SGD = sc.fuse()(fused_sgd)
RNG = np.random.default_rng(0)
X = RNG.standard_normal((5, 4))
LABELS = np.array([3, 0, 2, 2, 1])


def scatter(x, rows, labels, v):
    x[rows, labels] -= v           # a gather, a subtraction, a scatter (softmax's gradient)
    x[:, 0] = 0.5                  # a fill through basic indexing


def exp_out(x, y):
    sc.exp(x, out=y)
    sc.maximum(x, 0.0, out=x)


# name: (host arrays, work on their device copies -> result, or None when work writes in place only)
CASES = {
    "integer matmul": ([np.arange(12).reshape(3, 4), np.arange(20).reshape(4, 5)], lambda a, b: a @ b),
    "float vector dot": ([X[0], X[1]], lambda a, b: a @ b),
    "sum to 0-d": ([X.astype("float32")], lambda x: (x * x).sum()),
    "mean of rows": ([X], lambda x: x.mean(axis=1)),
    "gather": ([X, np.arange(5), LABELS], lambda x, rows, labels: x[rows, labels]),
    "scatter and fill": ([X, np.arange(5), LABELS, np.full(5, 0.25)], scatter),
    "ufunc out=": ([X, np.zeros_like(X)], exp_out),
    "fused in-place": ([X, X[::-1].copy()], lambda p, g: FUSED_SGD(p, g, 0.1)),
    "views between kernels": ([X], lambda x: ((x * 2).T + 1).reshape(-1)[::3] * 3),
    "memset then add": ([X], lambda x: sc.zeros(x.shape).__iadd__(x)),
    "cast and join": ([X], lambda x: sc.concatenate([x.astype("float32"), x[:2].astype("float32")])),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_replay_equals_the_eager_run_bit_for_bit(name, stream, pool):
    host, work = CASES[name]
    eager = on_device(*host) if len(host) > 1 else [on_device(*host)]
    expected = [work(*eager)] + eager
    captured = on_device(*host) if len(host) > 1 else [on_device(*host)]
    graph, out = capture(stream, lambda: work(*captured), pool)
    assert all(np.array_equal(a.get(), h) for a, h in zip(captured, host))     # unchanged until launched
    graph.launch(stream)
    stream.synchronize()
    for mine, theirs in zip([out] + captured, expected):
        if theirs is None:
            assert mine is None
        else:
            assert mine.dtype == theirs.dtype and mine.get().tobytes() == theirs.get().tobytes(), name


def test_a_python_number_is_frozen_into_the_graph_a_device_number_is_read_at_each_launch(stream, pool):
    """Must-fail for code that keeps a per-step number (a learning rate, a bias correction) on the
    host: the graph replays the number it was captured with."""
    g = np.arange(4.0)
    p_host, p_device, g_device = on_device(np.ones(4), np.ones(4), g)
    optimiser = {"rate": 0.1}                                    # the host's number, as an optimiser keeps it
    rate_device = on_device(np.array(0.1))

    def sgd(p, lr):
        p -= lr * g_device
    host_graph, _ = capture(stream, lambda: sgd(p_host, optimiser["rate"]), pool)
    device_graph, _ = capture(stream, lambda: sgd(p_device, rate_device), pool)
    for graph in (host_graph, device_graph):
        graph.launch(stream)
    optimiser["rate"] = 0.5                                      # the graph cannot see it
    with stream:
        rate_device.set(np.array(0.5))                           # outside the capture: the graph reads it
    for graph in (host_graph, device_graph):
        graph.launch(stream)
    stream.synchronize()
    assert p_host.get().tobytes() == (np.ones(4) - 0.1 * g - 0.1 * g).tobytes()
    assert p_device.get().tobytes() == (np.ones(4) - 0.1 * g - 0.5 * g).tobytes()


# -- what a capture refuses ----------------------------------------------------------------------------

D2H = "the current stream is capturing, so D2H transfers are disallowed"
H2D = "the current stream is capturing, so H2D transfers are disallowed"


@pytest.mark.parametrize("transfer, message", [
    (lambda x: float(x[0]), D2H), (lambda x: int(x[0]), D2H), (lambda x: bool(x[0]), D2H), (repr, D2H),
    (lambda x: x[0].item(), D2H), (lambda x: x.get(), D2H), (lambda x: x.tolist(), D2H),
    (lambda x: sc.asnumpy(x), D2H), (lambda x: x[x > 0], D2H),              # a mask's count is read back
    (lambda x: sc.asarray(np.ones(3)), H2D), (lambda x: x.set(np.ones(3)), H2D),
    (lambda x: x[[0, 2]], H2D),                                              # a host index is copied
    (lambda x: x.__setitem__(sc.arange(2), 0.0), H2D),   # a scatter's host value is copied (core.array)
    (lambda x: sc.concatenate([x] * 9), H2D),                       # CuPy copies the 9 pointers first
])
def test_transfers_between_host_and_device_are_refused_with_cupys_message(transfer, message, stream, pool):
    x = on_device(np.array([1.0, -2.0, 3.0]))
    syncs = sc.host_syncs()
    with sc.cuda.using_allocator(pool.malloc), stream:
        stream.begin_capture()
        with pytest.raises(RuntimeError, match=message):
            transfer(x)
        graph = stream.end_capture()       # CuPy refuses before CUDA sees it: the capture is still valid
    assert isinstance(graph, sc.cuda.Graph) and sc.host_syncs() == syncs
    transfer(x)                                                    # the same call works outside a capture


def test_a_float_matrix_product_is_refused_as_cupy_refuses_cublas_in_a_capture(stream, pool):
    """CuPy 14 calls ``cublas.setStream`` before every cuBLAS call, which raises on a capturing
    stream; integer products (CuPy's own kernel) and 1-element products (a multiply and a sum) pass."""
    a, b = on_device(X, X.T.copy())
    with sc.cuda.using_allocator(pool.malloc), stream:
        stream.begin_capture()
        with pytest.raises(NotImplementedError, match="cuBLAS API during stream capture"):
            a @ b
        with pytest.raises(NotImplementedError, match="cuBLAS"):
            sc.matmul(a[0], b)                                             # a vector times a matrix
        a[:1] @ b[:, :1]                                                   # one element: no cuBLAS
        stream.end_capture()
    assert (a @ b).shape == (5, 5)                                         # outside a capture: fine


def test_allocating_from_the_default_pool_in_a_capture_raises(stream):
    a, c = on_device(np.arange(3.0), np.zeros(3))
    with stream:
        stream.begin_capture()
        c += a                                          # in place: no new memory, no pool needed
        with pytest.raises(RuntimeError, match="default memory pool.*using_allocator\\(pool.malloc\\)"):
            a * 2
        with sc.cuda.using_allocator(None), pytest.raises(RuntimeError, match="default memory pool"):
            sc.zeros(3)                                 # no pool at all (cudaMalloc) is no better
        graph = stream.end_capture()
    graph.launch(stream)
    stream.synchronize()
    assert c.get().tolist() == [0.0, 1.0, 2.0]
    assert (a * 2).get().tolist() == [0.0, 2.0, 4.0]   # outside a capture the default pool is fine


@pytest.mark.parametrize("synchronize", [
    lambda s: s.synchronize(),
    lambda s: sc.cuda.Device().synchronize(),
    lambda s: sc.cuda.runtime.deviceSynchronize(),
])
def test_synchronizing_in_a_capture_fails_and_invalidates_it(synchronize, stream, pool):
    c = on_device(np.zeros(3))
    with stream:
        stream.begin_capture()
        with pytest.raises(CUDARuntimeError, match="cudaErrorStreamCaptureUnsupported"):
            synchronize(stream)
        with pytest.raises(RuntimeError, match="invalidated the capture"):
            stream.is_capturing()
        with pytest.raises(CUDARuntimeError, match="cudaErrorStreamCaptureInvalidated"):
            c += 1                                          # nothing more goes into a failed capture
        with pytest.raises(CUDARuntimeError, match="cudaErrorStreamCaptureInvalidated"):
            stream.end_capture()
    assert not stream.is_capturing()
    assert c.get().tolist() == [0.0, 0.0, 0.0]
    stream.synchronize()                                    # the stream works again


def test_capture_begins_and_ends_only_where_cuda_allows(stream, pool):
    with pytest.raises(RuntimeError, match="cannot capture on the default \\(legacy\\) stream"):
        sc.cuda.Stream.null.begin_capture()
    with pytest.raises(CUDARuntimeError, match="cudaErrorIllegalState.*not capturing"):
        stream.end_capture()
    stream.begin_capture()
    with pytest.raises(CUDARuntimeError, match="cudaErrorIllegalState.*capturing already"):
        stream.begin_capture()
    stream.end_capture()
    with pytest.raises(NotImplementedError, match="must be created via stream capture"):
        sc.cuda.Graph()


def test_is_capturing(stream, pool):
    assert not stream.is_capturing() and not sc.cuda.Stream.null.is_capturing()
    stream.begin_capture()
    assert stream.is_capturing()
    assert not sc.cuda.Stream.null.is_capturing()        # a non-blocking capture leaves it alone
    assert not sc.cuda.Stream(non_blocking=True).is_capturing()
    stream.end_capture()
    assert not stream.is_capturing()


def test_the_legacy_stream_is_refused_while_a_blocking_stream_captures(pool):
    a = on_device(np.arange(3.0))
    blocking = sc.cuda.Stream()
    with sc.cuda.using_allocator(pool.malloc), blocking:
        blocking.begin_capture()
        b = a + 4
        with pytest.raises(CUDARuntimeError, match="cudaErrorStreamCaptureImplicit"):
            sc.cuda.Stream.null.is_capturing()             # asking fails, and leaves the capture valid
        graph = blocking.end_capture()
        graph.launch()
    blocking.synchronize()
    assert b.get().tolist() == [4.0, 5.0, 6.0]
    with sc.cuda.using_allocator(pool.malloc), blocking:
        blocking.begin_capture()
        with sc.cuda.Stream.null, pytest.raises(CUDARuntimeError, match="cudaErrorStreamCaptureImplicit"):
            a + 1                                           # work on it fails, and invalidates the capture
        with pytest.raises(CUDARuntimeError, match="cudaErrorStreamCaptureInvalidated"):
            blocking.end_capture()


def test_an_array_the_capture_makes_holds_nothing_for_other_streams_until_launched(stream, pool):
    a = on_device(np.arange(3.0))
    with sc.cuda.using_allocator(pool.malloc), stream:
        stream.begin_capture()
        y = a * 2
        with sc.cuda.Stream.null, pytest.raises(sc.StreamOrderError, match="holds nothing until the graph"):
            y + 1
        with pytest.raises(NotImplementedError, match="spreads to other streams"):
            stream.record()                                 # a fork of the capture: not in the stand-in
        stream.end_capture()


# -- memory pools --------------------------------------------------------------------------------------

def test_a_pool_counts_its_blocks_and_using_allocator_is_per_thread(pool):
    assert sc.cuda.get_allocator() != pool.malloc
    with sc.cuda.using_allocator(pool.malloc):
        assert sc.cuda.get_allocator() == pool.malloc
        seen = []
        thread = threading.Thread(target=lambda: seen.append(sc.cuda.get_allocator() == pool.malloc))
        thread.start()
        thread.join()
        assert seen == [False]                              # the allocator is this thread's only
        x = sc.zeros(100)                                   # 800 bytes: one block of 1024
        view = x[10:]
        assert (pool.used_bytes(), pool.total_bytes(), pool.n_free_blocks()) == (1024, 1024, 0)
        del x
        assert pool.used_bytes() == 1024                    # the view holds the block
        del view
        assert (pool.used_bytes(), pool.total_bytes(), pool.n_free_blocks()) == (0, 1024, 1)
        y = sc.ones(128)                                    # 1024 bytes: the free block again
        assert (pool.used_bytes(), pool.total_bytes(), pool.n_free_blocks()) == (1024, 1024, 0)
        del y
    pool.free_all_blocks()
    assert (pool.used_bytes(), pool.total_bytes(), pool.n_free_blocks()) == (0, 0, 0)
    sc.zeros(100)
    assert pool.total_bytes() == 0                          # outside the block: not this pool's

