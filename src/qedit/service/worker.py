"""The worker: claim -> engine -> storage -> complete -> webhook. The only service module that
imports the engine, and only when the engine is first needed.

A worker owns a task through a lease it renews while running (on every step, and from a heartbeat
thread during long stages without steps). It stops early when the lease is lost or a cancel was
asked for; its completion is a conditional update, so a run that lost its lease is thrown away.

Request batching (``batch_size`` > 1, an engine with ``edit_batch``): after claiming a task the
worker waits up to ``batch_wait`` for queued tasks with the same ``batch_key`` (computed from the
stored params and input sizes, without loading anything) and claims them too, so one engine run
denoises them together. Each task of a batch keeps everything of its own: its lease and cancel
token, its request (built, and refused, alone), its result or error, and its completion; only the
engine call is shared. Batching trades up to ``batch_wait`` of latency for throughput: a GPU runs
N rows of a step in little more than the time of one while it has room.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from qedit.config import Settings
from qedit.errors import EditCancelled, InvalidInput, QeditError
from qedit.metadata import history_from_metadata
from qedit.models.batching import BatchItem, batch_key, request_key
from qedit.models.protocol import CancelToken, EditEngine, EditRequest, EditResult
from qedit.service.loras import lora_options
from qedit.service.metrics import Metrics
from qedit.service.records import FailureReason, TaskOutput, TaskRecord, WebhookState
from qedit.service.storage import StorageUnavailable
from qedit.service.tasks import TaskStore
from qedit.service.workers import Presence, WorkerState, served_model

if TYPE_CHECKING:
    from qedit.service.wiring import Core

log = logging.getLogger("qedit.worker")


def load_engine(settings: Settings) -> EditEngine:
    """``instant`` is the dry-run stand-in; anything else goes to the real engine (imports torch).

    Both get the LoRA store the API checked requests against (``service.loras.lora_options``).
    """
    loras = lora_options(settings)
    if settings.model == "instant":
        from qedit.service.instant import InstantEngine

        return InstantEngine(
            step_delay=settings.instant_step_delay,
            steps=settings.instant_steps,
            max_images=settings.max_images,
            loras=loras,
        )
    from qedit.engine.pipeline import Engine

    return Engine.load(
        settings.model, device=settings.device, dtype=settings.dtype, loras=loras, options=settings.engine_options()
    )


def task_batch_key(task: TaskRecord) -> Hashable:
    """``batch_key`` of a stored task: its params, its inputs' recorded sizes, whether it has a mask."""
    return batch_key(task.params, [(i.width, i.height) for i in task.inputs], task.mask is not None)


Outcome = EditResult | Exception
Served = Callable[[], dict[str, Any]]
"""More columns a completion records in its update (the backends router's chain, backend, price)."""


def _device_of(engine: EditEngine) -> str | None:
    """Where the engine runs, as the registry reports it (the real engine's components know; ``instant`` has none)."""
    device = getattr(getattr(engine, "components", None), "device", None)
    return str(device) if device is not None else None


def worker_name(kind: str) -> str:
    """``kind@host:pid:n``: the host and pid let a restarted server spot leases of dead processes."""
    return f"{kind}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class _Lease:
    """Renews a task's lease and relays cancel requests while the engine runs."""

    def __init__(self, tasks: TaskStore, task: TaskRecord, lease_seconds: float, token: CancelToken) -> None:
        self.tasks, self.task, self.lease, self.token = tasks, task, lease_seconds, token
        self.lost = False
        self._stop = threading.Event()
        self._last = time.monotonic()  # the claim just set the lease
        self._lock = threading.Lock()
        self.step, self.total = 0, 0  # the latest progress, written or not
        self._thread = threading.Thread(target=self._run, name=f"lease-{task.id[:8]}", daemon=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def beat(self, step: int | None = None, total: int | None = None, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if step is not None and total is not None:
                self.step, self.total = step, total
            if not force and now - self._last < 0.2:  # progress is written at most 5 times a second
                return
            self._last = now
        hb = self.tasks.heartbeat(self.task.id, self.task.attempt, self.lease, step, total)
        if not hb.owned:
            self.lost = True
        if not hb.owned or hb.cancel_requested:
            self.token.cancel()

    def _run(self) -> None:
        while not self._stop.wait(max(0.2, min(self.lease / 3, 5.0))):
            try:
                self.beat(force=True)
            except Exception:  # a DB hiccup must not kill the run; the next beat retries
                log.exception("heartbeat for %s failed", self.task.id)


class Worker:
    """Runs tasks from the store on one engine (loaded on first use), batching compatible ones if asked."""

    BATCH_POLL = 0.01  # seconds between looks for batch companions while ``batch_wait`` lasts

    def __init__(
        self,
        core: Core,
        *,
        engine_factory: Callable[[Settings], EditEngine] = load_engine,
        name: str | None = None,
        on_webhook: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = core.settings
        self.tasks = core.tasks
        self.storage = core.storage
        self.webhooks = core.webhooks
        self.metrics: Metrics | None = core.metrics
        self.engine_factory = engine_factory
        self.name = name or worker_name("worker")
        self.on_webhook = on_webhook or self.webhooks.deliver  # embedded mode hands deliveries to a pool
        self._engine: EditEngine | None = None
        self._engine_lock = threading.Lock()
        s = self.settings
        self.model = served_model(s.model)  # the tasks this worker claims: those stored with this model
        options = {**s.engine_options().describe(), "batch_size": s.batch_size, "batch_wait": s.batch_wait}
        self.presence = Presence(core.workers, self.name, self.model, s.device, options)
        if self.metrics is not None:
            self.metrics.describe_engine(s.model, s.engine_options().describe(), s.batch_size, s.batch_wait)

    def start(self) -> None:
        """Say so in the worker registry (state ``loading`` until the engine is loaded), and keep saying it."""
        self.presence.start()

    def stop(self) -> None:
        """Leave the registry (a worker killed instead just stops beating, and is pruned)."""
        self.presence.stop()

    @property
    def engine(self) -> EditEngine:
        with self._engine_lock:
            if self._engine is None:
                t0 = time.perf_counter()
                self._engine = self.engine_factory(self.settings)
                log.info("engine %s loaded in %.1f s", self._engine.model_id, time.perf_counter() - t0)
                self.presence.set(WorkerState.IDLE, device=_device_of(self._engine))
                if self.metrics is not None:
                    self.metrics.engine_ready.set(1)
            return self._engine

    @property
    def ready(self) -> bool:
        return self._engine is not None

    def run_next(self, task_id: str | None = None) -> TaskRecord | None:
        """Claim one task (the oldest, or ``task_id``) and run it, batched with compatible queued tasks
        when batching is on; None if there was nothing to run. Returns the claimed task as it ended."""
        engine = self.engine  # load before claiming: a lease must not expire while weights load
        task = self.tasks.claim(
            self.name,
            self.settings.lease_seconds,
            task_id=task_id,
            max_attempts=self.settings.max_attempts,
            model=self.model,
        )
        if task is None:
            return None
        self.run_batch([task, *self._companions(task, engine)], engine)
        return self.tasks.get(task.id)

    def run(
        self,
        task: TaskRecord,
        engine: EditEngine,
        *,
        webhook: bool = True,
        served: Served | None = None,
    ) -> None:
        """Run one claimed task to its end (completed, failed, cancelled, or lost to another worker).

        For the backends router: ``served`` gives more columns recorded in the completing update (the
        attempt chain, the serving backend and its price), so no reader sees the task completed
        without them; ``webhook=False`` leaves the webhook to the router, sent once its chain is written."""
        self.run_batch([task], engine, webhook=webhook, served=served)

    def run_batch(
        self,
        tasks: Sequence[TaskRecord],
        engine: EditEngine,
        *,
        webhook: bool = True,
        served: Served | None = None,
    ) -> None:
        """Run claimed tasks in one engine call where they can share one (``edit_batch``), each to its own end.

        ``served`` and ``webhook=False``: see ``run`` (the router hands over one task at a time)."""
        t0 = time.perf_counter()
        self.presence.set(WorkerState.BUSY, task_id=tasks[0].id)
        ended = 0
        with contextlib.ExitStack() as stack:
            leases = [
                stack.enter_context(_Lease(self.tasks, task, self.settings.lease_seconds, CancelToken()))
                for task in tasks
            ]
            results = self._edit(engine, leases)
            engine_seconds = time.perf_counter() - t0
            outcomes = [
                self._settle_guarded(lease, result, engine_seconds, len(tasks), served)
                for lease, result in zip(leases, results, strict=True)
            ]
        for task, outcome in zip(tasks, outcomes, strict=True):
            log.info(
                "task %s attempt %d: %s in %.2f s%s",
                task.id,
                task.attempt,
                outcome,
                time.perf_counter() - t0,
                f" (batch of {len(tasks)})" if len(tasks) > 1 else "",
            )
            if outcome != "lost":
                ended += 1
                self._finished(task.id, task.attempt, webhook)
        self.presence.set(WorkerState.IDLE, done=ended)

    # -- batching -------------------------------------------------------------------------------------

    def _companions(self, first: TaskRecord, engine: EditEngine) -> list[TaskRecord]:
        """Queued tasks claimed to run with ``first``: same ``batch_key``, waiting at most ``batch_wait``."""
        size = self.settings.batch_size
        if size <= 1 or not callable(getattr(engine, "edit_batch", None)):
            return []
        key = task_batch_key(first)
        deadline = time.monotonic() + self.settings.batch_wait
        claimed: list[TaskRecord] = []
        passed: set[str] = {first.id}  # other batches' tasks, and tasks someone else claimed first
        while True:
            for candidate in self.tasks.queued(limit=32 + 4 * size, exclude=sorted(passed), model=self.model):
                passed.add(candidate.id)
                if task_batch_key(candidate) != key:
                    continue
                task = self.tasks.claim(
                    self.name,
                    self.settings.lease_seconds,
                    task_id=candidate.id,
                    max_attempts=self.settings.max_attempts,
                    model=self.model,
                )
                if task is not None:
                    claimed.append(task)
                    if len(claimed) == size - 1:
                        return claimed
            left = deadline - time.monotonic()
            if left <= 0:
                return claimed
            time.sleep(min(self.BATCH_POLL, left))

    def _edit(self, engine: EditEngine, leases: Sequence[_Lease]) -> list[Outcome]:
        """Each task's result or the exception that ended it; requests sharing a key run as one batch."""
        results: dict[int, Outcome] = {}
        groups: dict[Hashable, list[tuple[int, BatchItem]]] = {}
        for i, lease in enumerate(leases):
            try:
                request = self._request(lease.task)
            except Exception as e:  # this task's inputs alone: it fails, the others run
                results[i] = e
                continue
            item = BatchItem(request, on_step=lambda s, n, _e, lease=lease: lease.beat(s, n), cancel=lease.token)
            groups.setdefault(request_key(request), []).append((i, item))
        for group in groups.values():
            outcomes = self._edit_group(engine, [item for _, item in group])
            results.update(zip((i for i, _ in group), outcomes, strict=True))
        return [results[i] for i in range(len(leases))]

    def _edit_group(self, engine: EditEngine, items: list[BatchItem]) -> list[Outcome]:
        """One engine call: ``edit`` for one item, ``edit_batch`` for several; an error of the call is each item's."""
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(items))
        try:
            if len(items) == 1:
                item = items[0]
                return [engine.edit(item.request, on_step=item.on_step, cancel=item.cancel)]
            outcomes = list(engine.edit_batch(items))  # type: ignore[attr-defined]
            if len(outcomes) != len(items):
                raise RuntimeError(f"edit_batch returned {len(outcomes)} results for {len(items)} edits")
            return outcomes
        except Exception as e:
            return [e] * len(items)

    # -- the end of one task ---------------------------------------------------------------------------

    def _settle_guarded(
        self, lease: _Lease, result: Outcome, engine_seconds: float, batch: int, served: Served | None = None
    ) -> str:
        """``_settle``, where a store that cannot be written to affects this task only: unrecorded, its
        lease runs out and it is run again; the batch's other tasks are still recorded."""
        try:
            return self._settle(lease, result, engine_seconds, batch, served)
        except Exception:
            log.exception("could not record the end of task %s; it runs again when its lease ends", lease.task.id)
            return "lost"

    def _settle(
        self, lease: _Lease, result: Outcome, engine_seconds: float, batch: int, served: Served | None = None
    ) -> str:
        """Record one task's end (its files, then the conditional update); returns the outcome for the log.

        ``engine_seconds`` is the engine call's wall time, the task's ``inference`` timing; its
        ``compute_seconds`` (what usage reports) is its share of the call.
        """
        task = lease.task
        compute = engine_seconds / batch
        try:
            if isinstance(result, Exception):
                raise result
            outputs = self._write_outputs(task, result)
            timings = self._timings(task, result, engine_seconds)
            if self.metrics is not None:
                self.metrics.observe_stats(result.stats)
            progress = (lease.step, lease.total)
            if self.tasks.complete(
                task.id, task.attempt, outputs, timings, compute, progress, served() if served else None
            ):
                return "completed"
            self._discard(outputs)  # lost the lease meanwhile: the attempt that owns the task writes its own files
            return "lost"
        except EditCancelled:
            if lease.lost:
                return "lost"
            self.tasks.finish_cancelled(task.id, task.attempt, compute)
            return "cancelled"
        except StorageUnavailable:
            raise  # not the request's fault: unrecorded, the task runs again when its lease ends
        except QeditError as e:
            self._fail(task, str(e), "invalid_input", compute)
        except Exception as e:
            log.exception("task %s failed", task.id)
            self._fail(task, f"{type(e).__name__}: {e}", "engine_error", compute)
        return "failed"

    def _finished(self, task_id: str, attempt: int, webhook: bool = True) -> None:
        """Metrics and the webhook of a task this worker ended (its ``attempt``: not another's end)."""
        final = self.tasks.get(task_id)
        if final is not None:
            if self.metrics is not None and final.attempt == attempt:
                self.metrics.observe_task(final)
            if webhook and final.webhook_state == WebhookState.PENDING:
                self.on_webhook(final.id)

    # -- steps of a run -----------------------------------------------------------------------------

    def _request(self, task: TaskRecord) -> EditRequest:
        from qedit import imageio

        stored = [self._stored(i.path, f"image[{n}]") for n, i in enumerate(task.inputs)]  # each read once
        images = tuple(imageio.load_image(data, field=f"image[{n}]") for n, data in enumerate(stored))
        mask = imageio.load_mask(self._stored(task.mask, "mask"), field="mask") if task.mask else None
        history: tuple[dict, ...] = ()
        parent = None
        last = task.inputs[-1]
        if last.parent_id:
            parent = last.source if last.source.startswith("task://") else f"task://{last.parent_id}"
            history = history_from_metadata(imageio.read_metadata(stored[-1]))
        return EditRequest(params=task.params, images=images, mask=mask, parent=parent, history=history)

    def _stored(self, key: str, field: str) -> bytes:
        """An input's bytes from the storage; one that is gone (deleted by hand) is the task's failure."""
        try:
            return self.storage.read(key)
        except FileNotFoundError:
            raise InvalidInput(f"the stored input {key} is missing", field=field) from None

    def _write_outputs(self, task: TaskRecord, result: EditResult) -> list[TaskOutput]:
        from qedit import imageio

        fmt = task.options.output_format
        outputs = []
        for i, out in enumerate(result.outputs):
            name = f"{i}-a{task.attempt}.{imageio.EXTENSIONS[fmt]}"
            metadata = {**out.metadata, "task": task.id}
            file = self.storage.write_output(task.id, name, imageio.encode_image(out.image, fmt, metadata))
            width, height = out.image.size
            outputs.append(
                TaskOutput(
                    name=name, file=file, seed=out.seed, width=width, height=height, format=fmt, metadata=metadata
                )
            )
        return outputs

    def _discard(self, outputs: list[TaskOutput]) -> None:
        for o in outputs:
            try:
                self.storage.delete(o.file)
            except Exception:  # a leftover file is the sweeper's to delete, not a reason to fail
                log.warning("could not delete %s of a lost attempt", o.file, exc_info=True)

    def _timings(self, task: TaskRecord, result: EditResult, compute: float) -> dict[str, float]:
        return {
            **{k: round(v, 4) for k, v in result.timings.items()},
            "inference": round(compute, 4),
            "queue_wait": round(task.queue_wait or 0.0, 4),
        }

    def _fail(self, task: TaskRecord, error: str, reason: FailureReason, compute: float) -> None:
        self.tasks.fail(task.id, task.attempt, error[:2000], reason, compute)  # counted in _finished
