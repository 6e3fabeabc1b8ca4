"""Concurrency contract: one Interpreter and an InterpreterPool used from many threads at once.

The stress tests run 8 threads × 125 runs with mixed batch sizes (1..4) of the bundled digits
CNN, float32 and int8, and compare every result with the single-threaded one for the same input
(exact equality: same kernels, same thread count, so the same arithmetic).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

import edgert
from edgert.converter import convert
from edgert.errors import EdgeRTError
from edgert.runtime import Interpreter, InterpreterPool

DIGITS = Path(__file__).resolve().parent.parent / "models" / "digits_cnn.onnx"
THREADS = 8
RUNS = 125  # per thread: 1,000 runs per configuration


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The digits CNN as float32 and int8 `.edgert` files (paths: the pool maps the file)."""
    folder = tmp_path_factory.mktemp("concurrency")
    fp32 = folder / "digits.edgert"
    convert(str(DIGITS), str(fp32))
    rng = np.random.default_rng(0)
    calib = {"input": rng.random((64, 1, 8, 8), dtype=np.float32)}
    int8 = folder / "digits_int8.edgert"
    edgert.quantize(str(DIGITS), int8, calibration=calib)
    return {"fp32": str(fp32), "int8": str(int8)}


def _inputs(n: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.random((int(rng.integers(1, 5)), 1, 8, 8), dtype=np.float32) for _ in range(n)]


def _references(path: str, xs: list[np.ndarray], num_threads: int) -> list[np.ndarray]:
    """Single-threaded results, one fresh interpreter per batch size (no re-plan in between)."""
    ref = []
    for x in xs:
        ref.append(Interpreter(path, num_threads).run({"input": x})["probabilities"])
    return ref


def _stress(run, xs: list[np.ndarray], ref: list[np.ndarray]) -> None:
    """THREADS threads × RUNS runs of ``run(feeds)`` on inputs drawn at random; every result
    must equal its reference exactly, and no thread may raise."""
    barrier = threading.Barrier(THREADS)
    errors: list[str] = []
    done = [0] * THREADS

    def worker(t: int) -> None:
        rng = np.random.default_rng(100 + t)
        try:
            barrier.wait()
            for _ in range(RUNS):
                k = int(rng.integers(len(xs)))
                y = run({"input": xs[k]})["probabilities"]
                if y.shape != ref[k].shape or not np.array_equal(y, ref[k]):
                    errors.append(f"thread {t}: wrong result for input {k} {xs[k].shape}")
                done[t] += 1
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(f"thread {t}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    assert not errors, errors[:5]
    assert sum(done) == THREADS * RUNS


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_one_interpreter_from_8_threads_mixed_shapes(models, precision, num_threads):
    """One shared Interpreter: runs take turns under its lock; every answer is right, including
    a re-plan between almost every pair of runs (the batch size changes)."""
    path = models[precision]
    xs = _inputs()
    ref = _references(path, xs, num_threads)
    shared = Interpreter(path, num_threads)
    _stress(shared.run, xs, ref)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_pool_from_8_threads_mixed_shapes(models, precision):
    """An InterpreterPool of 4 (fewer members than threads: runs also wait for a free one)."""
    path = models[precision]
    xs = _inputs()
    ref = _references(path, xs, 1)
    with InterpreterPool(path, size=4) as pool:
        _stress(pool.run, xs, ref)
        assert 1 <= pool.created <= 4


def test_pool_members_share_the_model_and_run_in_parallel(models):
    path = models["fp32"]
    pool = InterpreterPool(path, size=3)
    assert pool.created == 1  # lazily: one at construction, the others on demand
    assert pool.input_names == ["input"] and pool.output_names == ["probabilities"]
    inside = threading.Barrier(3, timeout=30)
    got = []

    def hold() -> None:
        with pool.interpreter() as interp:
            got.append(interp)
            inside.wait()  # all three borrowed at once: three distinct members

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len({id(i) for i in got}) == 3 and pool.created == 3
    assert len({id(i._model) for i in got}) == 1  # one mapped model, one decoded graph
    pool.close()


def test_pool_blocks_when_every_member_is_busy_and_close_wakes_waiters(models):
    pool = InterpreterPool(models["fp32"], size=1)
    x = _inputs(1)[0]
    outcome = []

    def waiter() -> None:
        try:
            pool.run({"input": x})
            outcome.append("ran")
        except EdgeRTError as exc:
            outcome.append(str(exc))

    with pool.interpreter():
        th = threading.Thread(target=waiter)
        th.start()
        time.sleep(0.2)
        assert not outcome and th.is_alive()  # waiting for the only member
    th.join(timeout=30)
    assert outcome == ["ran"]

    outcome.clear()
    with pool.interpreter():
        th = threading.Thread(target=waiter)
        th.start()
        time.sleep(0.2)
        pool.close()
        th.join(timeout=30)
    assert outcome and "closed" in outcome[0]
    assert pool.closed and pool.created == 0
    with pytest.raises(EdgeRTError, match="closed"):
        pool.run({"input": x})


def test_pool_arguments(models):
    path = models["fp32"]
    x = _inputs(1)[0]
    with InterpreterPool(path, size=2) as pool:
        with pytest.raises(EdgeRTError, match="copies"):
            pool.run({"input": x}, copy=False)
        with pool.interpreter() as interp:  # zero-copy views while borrowed
            y = interp.run({"input": x}, copy=False)["probabilities"]
            assert not y.flags.writeable
    for bad in (0, -1, 1.5, True):
        with pytest.raises(EdgeRTError, match="size"):
            InterpreterPool(path, size=bad)
    with open(path, "rb") as f:
        data = f.read()
    with InterpreterPool(data, num_threads=2, timeout_s=10.0) as pool:  # bytes and kwargs
        assert pool.size >= 1
        ref = Interpreter(path, 2).run({"input": x})["probabilities"]
        assert np.array_equal(pool.run({"input": x})["probabilities"], ref)
