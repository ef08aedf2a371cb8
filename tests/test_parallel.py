"""The helpers of minimf's threaded trainers (minimf/parallel/threads.py): ranges cut into parts, tasks
run at once with errors passed on, and an optimiser step shared out between threads that equals
``optimizer.step`` bit for bit."""
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from minimf.nn.optim import SGD, Adam
from minimf.parallel.threads import check_threaded, in_parallel, split, update_in_parallel


def test_split_covers_every_index_once():
    for n, parts in [(10, 3), (7, 7), (1000, 2), (5, 1), (3, 5)]:
        slices = split(n, parts)
        assert len(slices) == parts
        assert np.concatenate([np.arange(n)[s] for s in slices]).tolist() == list(range(n))
        sizes = [s.stop - s.start for s in slices]
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "2", None])
def test_thread_counts_must_be_positive_integers(bad):
    with pytest.raises(ValueError, match="positive integer"):
        check_threaded(SimpleNamespace(xp=np), bad, "unit-split")


def test_threaded_trainers_need_numpy():
    check_threaded(SimpleNamespace(xp=np), 2, "batch-split")       # passes
    on_gpu = SimpleNamespace(xp=SimpleNamespace(__name__="cupy"))
    with pytest.raises(ValueError, match="batch-split training runs on NumPy"):
        check_threaded(on_gpu, 2, "batch-split")


def test_in_parallel_returns_results_in_order_and_runs_tasks_at_once():
    both_started = threading.Barrier(3, timeout=10)    # three tasks wait for each other: one at a
    with ThreadPoolExecutor(max_workers=2) as pool:    # time, the barrier would time out
        results = in_parallel(pool, [lambda k=k: (both_started.wait(), k)[1] for k in range(3)])
    assert results == [0, 1, 2]


def test_in_parallel_raises_a_task_error_after_every_task_has_finished():
    finished = []

    def slow_ok():
        threading.Event().wait(0.05)
        finished.append("slow")

    def broken():
        raise RuntimeError("task 1 broke")

    with ThreadPoolExecutor(max_workers=2) as pool:
        with pytest.raises(RuntimeError, match="task 1 broke"):
            in_parallel(pool, [lambda: None, broken, slow_ok])
        assert finished == ["slow"]                    # waited for, not abandoned


@pytest.mark.parametrize("make_optimizer", [lambda: Adam(lr=0.01), lambda: SGD(lr=0.1, momentum=0.9),
                                            lambda: SGD(lr=0.1)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_update_in_parallel_equals_step_bit_for_bit(make_optimizer, threads):
    rng = np.random.default_rng(0)
    layers = [{"W": rng.standard_normal((5, 7)).astype(np.float32), "b": rng.standard_normal(7).astype(np.float32)},
              {"W": rng.standard_normal((7, 2)).astype(np.float32), "b": None}]
    whole = [{k: None if v is None else v.copy() for k, v in p.items()} for p in layers]
    shared = [{k: None if v is None else v.copy() for k, v in p.items()} for p in layers]
    whole_opts, shared_opts = [make_optimizer() for _ in layers], [make_optimizer() for _ in layers]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(3):
            grads = [{k: None if v is None else rng.standard_normal(v.shape).astype(np.float32) for k, v in p.items()}
                     for p in layers]
            for opt, params, g in zip(whole_opts, whole, grads):
                opt.step(params, g)
            update_in_parallel(pool, list(zip(shared_opts, shared, grads)), threads)
    for a, b in zip(whole, shared):
        for name in a:
            if a[name] is not None:
                np.testing.assert_array_equal(b[name], a[name])
    assert shared[1]["b"] is None


def test_a_missed_part_is_caught():
    """The equality above is not vacuous: updating only the first of two parts differs."""
    rng = np.random.default_rng(0)
    p = rng.standard_normal(10).astype(np.float32)
    g = rng.standard_normal(10).astype(np.float32)
    whole, partly = {"p": p.copy()}, {"p": p.copy()}
    Adam().step(whole, {"p": g})
    opt = Adam()
    opt.start_step({"p": g})
    opt.update("p", partly["p"], g, split(10, 2)[0])
    assert not np.array_equal(partly["p"], whole["p"])
    np.testing.assert_array_equal(partly["p"][:5], whole["p"][:5])


def test_updating_part_of_a_non_contiguous_array_is_refused():
    opt = Adam()
    p = np.zeros((4, 6), np.float32)[:, ::2]              # a strided view: flattening it would copy
    g = np.ones_like(p)
    opt.start_step({"p": g})
    with pytest.raises(ValueError, match="non-contiguous"):
        opt.update("p", p, g, slice(0, 6))
