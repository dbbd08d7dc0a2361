"""Request batching in the worker: compatible queued tasks denoised in one engine run, each task its own.

The dry-run ``InstantEngine`` (its ``edit_batch`` pays each step's delay once for the whole batch, as
a GPU batch roughly does) and SQLite in ``tmp_path``; each task gets its own input image and seed, so
an output given to the wrong task shows. The last test runs the real tiny engine batched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from PIL import Image

from qedit import imageio
from qedit.models.batching import BatchItem
from qedit.models.protocol import EditEngine, EditRequest, EditResult
from qedit.service.instant import InstantEngine
from qedit.service.records import TaskStatus
from qedit.service.wiring import Core
from qedit.service.worker import Worker, worker_name
from tests.support.images import encode, pattern, png_bytes
from tests.support.tasks import current, queue_edit


class Batches(InstantEngine):
    """The instant engine, keeping how many edits each engine call ran (1 = ``edit``)."""

    def __init__(self, step_delay: float = 0.0, stats: dict[str, int] | None = None) -> None:
        super().__init__(step_delay=step_delay)
        self.calls: list[int] = []
        self.stats = stats or {}

    def edit(self, request: EditRequest, **kw: object) -> EditResult:  # type: ignore[override]
        self.calls.append(1)
        return self._with_stats(super().edit(request, **kw))  # type: ignore[arg-type]

    def edit_batch(self, items: Sequence[BatchItem]) -> list[EditResult | Exception]:
        self.calls.append(len(items))
        return [r if isinstance(r, Exception) else self._with_stats(r) for r in super().edit_batch(items)]

    def _with_stats(self, result: EditResult) -> EditResult:
        return EditResult(outputs=result.outputs, model=result.model, timings=result.timings, stats=self.stats)


def worker(core: Core, engine: EditEngine) -> Worker:
    return Worker(core, engine_factory=lambda s: engine, name=worker_name("test"), on_webhook=lambda t: None)


def queue_four(core: Core, **params: object) -> list[str]:
    """Four compatible tasks, each with its own input pattern, prompt and seed."""
    return [
        queue_edit(core, f"edit {i}", images=[encode(pattern((480, 400), seed=i), "PNG")], seed=100 + i, **params)
        for i in range(4)
    ]


def run_all(w: Worker) -> None:
    while w.run_next() is not None:
        pass


def outputs_of(core: Core, task_id: str) -> list[tuple[bytes, int, dict[str, str]]]:
    """Each output's pixels, seed and metadata (less the task id, which differs by design)."""
    task = current(core, task_id)
    assert task.status == TaskStatus.COMPLETED, (task.status, task.error)
    out = []
    for o in task.outputs:
        pixels = Image.open(core.storage.absolute(o.file)).convert("RGB").tobytes()
        meta = {k: v for k, v in imageio.read_metadata(core.storage.absolute(o.file)).items() if k != "task"}
        out.append((pixels, o.seed, meta))
    return out


def metric(core: Core, name: str, labels: dict[str, str] | None = None) -> float | None:
    return core.metrics.registry.get_sample_value(name, labels or {})


def test_four_compatible_tasks_run_as_one_batch_each_output_as_if_it_ran_alone(
    make_core: Callable[..., Core], tmp_path: Path
) -> None:
    batched = make_core(batch_size=4, batch_wait=0.2)
    ids = queue_four(batched, num_images=2)
    engine = Batches()
    first = worker(batched, engine).run_next()
    assert first is not None and first.id == ids[0]
    assert engine.calls == [4]
    assert [current(batched, t).status for t in ids] == [TaskStatus.COMPLETED] * 4
    assert (metric(batched, "qedit_batch_size_count"), metric(batched, "qedit_batch_size_sum")) == (1, 4)

    alone = make_core(data_dir=tmp_path / "alone")  # batch_size 1: one task per engine run
    alone_ids = queue_four(alone, num_images=2)
    single = Batches()
    run_all(worker(alone, single))
    assert single.calls == [1, 1, 1, 1]
    for b, a in zip(ids, alone_ids, strict=True):
        assert outputs_of(batched, b) == outputs_of(alone, a)
    assert outputs_of(batched, ids[0])[0][0] != outputs_of(batched, ids[1])[0][0]  # the inputs do differ


def test_tasks_differing_in_steps_or_size_are_not_batched_together(make_core: Callable[..., Core]) -> None:
    core = make_core(batch_size=4, batch_wait=0.05)
    a = queue_edit(core, "a", num_inference_steps=4)
    other_steps = queue_edit(core, "b", num_inference_steps=8)
    other_size = queue_edit(core, "c", num_inference_steps=4, images=[png_bytes((512, 400))])
    other_output = queue_edit(core, "d", num_inference_steps=4, size=(512, 512))
    b = queue_edit(core, "e", num_inference_steps=4)
    engine = Batches()
    w = worker(core, engine)
    w.run_next()
    assert engine.calls == [2]
    assert [current(core, t).status for t in (a, b)] == [TaskStatus.COMPLETED] * 2
    assert {current(core, t).status for t in (other_steps, other_size, other_output)} == {TaskStatus.CREATED}
    run_all(w)
    assert engine.calls == [2, 1, 1, 1]


def test_a_task_queued_during_the_wait_joins_the_batch(make_core: Callable[..., Core]) -> None:
    core = make_core(batch_size=4, batch_wait=1.0)
    first = queue_edit(core, "first")
    engine = Batches()
    runner = threading.Thread(target=worker(core, engine).run_next)
    runner.start()
    deadline = time.monotonic() + 5
    while current(core, first).status == TaskStatus.CREATED and time.monotonic() < deadline:
        time.sleep(0.01)
    late = queue_edit(core, "late")  # the worker is waiting for companions now
    runner.join(10)
    assert engine.calls == [2]
    assert current(core, late).status == TaskStatus.COMPLETED


def test_without_batching_or_an_engine_that_cannot_batch_tasks_run_one_at_a_time(
    make_core: Callable[..., Core], tmp_path: Path
) -> None:
    off = make_core(batch_size=1)
    queue_four(off)
    engine = Batches()
    worker(off, engine).run_next()
    assert engine.calls == [1]

    class NoBatch(InstantEngine):  # the EditEngine protocol only
        edit_batch = None

    on = make_core(data_dir=tmp_path / "on", batch_size=4, batch_wait=0.05)
    ids = queue_four(on)
    worker(on, NoBatch()).run_next()
    assert [current(on, t).status for t in ids].count(TaskStatus.COMPLETED) == 1


def wait_running(core: Core, ids: list[str], timeout: float = 10.0) -> None:
    """Until every task is past its first step (the batch is in the engine)."""
    deadline = time.monotonic() + timeout
    while not all(current(core, t).progress_step > 0 for t in ids):
        assert time.monotonic() < deadline, [current(core, t).status for t in ids]
        time.sleep(0.02)


def test_cancelling_one_task_of_a_running_batch_leaves_the_others_completing(make_core: Callable[..., Core]) -> None:
    core = make_core(batch_size=4, batch_wait=0.2)
    ids = queue_four(core, num_inference_steps=30)
    engine = Batches(step_delay=0.05)
    runner = threading.Thread(target=worker(core, engine).run_next)
    runner.start()
    wait_running(core, ids)
    core.tasks.request_cancel(ids[1])
    runner.join(20)
    assert engine.calls == [4]
    tasks = [current(core, t) for t in ids]
    assert [t.status for t in tasks] == [TaskStatus.COMPLETED, TaskStatus.CANCELLED, *[TaskStatus.COMPLETED] * 2]
    assert tasks[1].outputs == [] and tasks[1].progress_step < 30
    assert all(t.n_outputs == 1 and (t.progress_step, t.progress_total) == (30, 30) for t in tasks if t is not tasks[1])


def test_one_failing_task_of_a_batch_fails_alone(make_core: Callable[..., Core]) -> None:
    core = make_core(batch_size=4, batch_wait=0.2)
    ok = queue_edit(core, "fine")
    bad = queue_edit(core, "please [fail]")
    unreadable = queue_edit(core, "inputs gone")
    ok2 = queue_edit(core, "fine too")
    for i in current(core, unreadable).inputs:
        core.storage.absolute(i.path).write_bytes(b"not an image")
    engine = Batches()
    worker(core, engine).run_next()
    assert engine.calls == [3]  # the unreadable one failed before the engine
    failed = current(core, bad)
    assert failed.status == TaskStatus.FAILED and failed.error_reason == "engine_error" and "[fail]" in failed.error
    gone = current(core, unreadable)
    assert gone.status == TaskStatus.FAILED and gone.error_reason == "invalid_input"
    assert [current(core, t).status for t in (ok, ok2)] == [TaskStatus.COMPLETED] * 2


def test_a_batch_is_faster_than_running_its_tasks_one_by_one(make_core: Callable[..., Core], tmp_path: Path) -> None:
    """Loosely: the instant engine's steps cost 8 x 4 x 30 ms one by one, 2 x 4 x 30 ms in batches of 4."""
    seconds = {}
    for size in (1, 4):
        core = make_core(data_dir=tmp_path / f"b{size}", batch_size=size, batch_wait=0.05)
        ids = queue_four(core) + queue_four(core)
        w = worker(core, Batches(step_delay=0.03))
        t0 = time.perf_counter()
        run_all(w)
        seconds[size] = time.perf_counter() - t0
        assert [current(core, t).status for t in ids] == [TaskStatus.COMPLETED] * 8
    assert seconds[4] < 0.75 * seconds[1], seconds


def test_a_batched_task_records_its_share_of_compute_and_the_engine_s_pass_counts(
    make_core: Callable[..., Core],
) -> None:
    core = make_core(batch_size=2, batch_wait=0.2)
    ids = queue_four(core)[:2]
    worker(core, Batches(step_delay=0.05, stats={"transformer_passes": 8, "cached_passes": 3})).run_next()
    tasks = [current(core, t) for t in ids]
    for t in tasks:
        assert t.timings["inference"] >= 0.2  # the batch's 4 steps of 50 ms
        assert t.compute_seconds == pytest.approx(t.timings["inference"] / 2, rel=0.05)
    assert metric(core, "qedit_transformer_passes_sum") == 16 and metric(core, "qedit_cached_passes_sum") == 6


def test_the_engine_options_and_batching_are_described_in_the_metrics(make_core: Callable[..., Core]) -> None:
    core = make_core(quantize="int8", step_cache="dbcache", batch_size=4)
    worker(core, InstantEngine())
    labels = {
        "model": "instant",
        "offload": "none",
        "quantize": "int8",
        "gguf_file": "",
        "cache": "dbcache",
        "cache_threshold": "0.08",
        "cache_warmup": "8",
        "compile": "false",
        "cfg_batch": "auto",
        "text_cache": "16",
        "batch_size": "4",
        "batch_wait": "0.05",
    }
    assert metric(core, "qedit_engine_info", labels) == 1


def test_the_real_tiny_engine_batched_gives_each_task_its_unbatched_output(
    make_core: Callable[..., Core], tiny_path: Path
) -> None:
    from qedit.engine.pipeline import Engine

    if not hasattr(Engine, "edit_batch"):
        pytest.skip("Engine.edit_batch is not there yet")
    core = make_core(model=str(tiny_path), device="cpu", batch_size=2, batch_wait=0.2)
    ids = [
        queue_edit(
            core, f"tiny {i}", images=[encode(pattern((448, 384), seed=i), "PNG")], seed=7 + i, num_inference_steps=2
        )
        for i in range(2)
    ]
    w = Worker(core, name=worker_name("test"), on_webhook=lambda t: None)  # the service's own load_engine
    w.run_next()
    assert (metric(core, "qedit_batch_size_count"), metric(core, "qedit_batch_size_sum")) == (1, 2)
    engine = w.engine
    for t in ids:
        task = current(core, t)
        assert task.status == TaskStatus.COMPLETED, task.error
        alone = engine.edit(w._request(task))
        batched = Image.open(core.storage.absolute(task.outputs[0].file)).convert("RGB")
        assert _max_difference(batched, alone.images[0]) <= 2, t


def _max_difference(a: Image.Image, b: Image.Image) -> int:
    import numpy as np

    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b.convert("RGB"), dtype=np.int16)).max())


def test_celery_messages_of_tasks_a_batch_already_ran_do_nothing(make_core: Callable[..., Core]) -> None:
    from qedit.service import celery_app

    core = make_core(batch_size=4, batch_wait=0.05, dispatch="celery")
    ids = queue_four(core)
    engine = Batches()
    celery_app.bind_worker(worker(core, engine))
    try:
        assert celery_app.run_task(ids[2]) == "completed"  # its message came first; the batch took the rest
        assert engine.calls == [4]
        assert [celery_app.run_task(t) for t in ids if t != ids[2]] == ["skipped"] * 3
    finally:
        celery_app.bind_worker(None)
    assert engine.calls == [4] and [current(core, t).attempt for t in ids] == [1] * 4
