"""Getting tasks to workers: in-process threads (embedded) or Celery (scale-out).

Either way the store is the truth and the dispatcher only says "there is work": a lost wake-up or a
lost broker message delays a task, never loses it, because the sweeper finds every task that is
queued but not running, or running under a dead lease, and hands it out again. Duplicate hand-outs
are harmless: the claim is atomic.

The sweeper also delivers webhooks left pending by a crash, deletes files past their lifetime and
prunes the worker registry's stale rows.

Routing by model: a task runs only on a worker of its model (the claim filters by it). Embedded
workers serve ``settings.model``; in Celery mode each model has its own queue
(``celery_app.model_queue``), so a message waits for a worker of its model, however long.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

from qedit.service.records import TaskStatus

if TYPE_CHECKING:
    from qedit.service.wiring import Core
    from qedit.service.worker import Worker

log = logging.getLogger("qedit.dispatch")


class Dispatcher(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def submit(self, task_id: str, model: str | None = None) -> None: ...

    def deliver_webhook(self, task_id: str) -> None: ...

    def routes(self, model: str) -> bool:
        """Can tasks of ``model`` go somewhere now beyond the workers in the registry (a backend)?"""
        ...

    @property
    def ready(self) -> bool: ...


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_local_worker(worker: str | None) -> bool:
    """True if ``worker`` (``kind@host:pid:n``) ran on this host in a process that no longer exists."""
    if not worker or "@" not in worker:
        return False
    host, _, rest = worker.partition("@")[2].partition(":")
    pid = rest.partition(":")[0]
    return host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid))


class Sweeper:
    """Periodic housekeeping shared by both dispatch modes."""

    def __init__(
        self, core: Core, deliver: Callable[[str], None], redispatch: Callable[[str], None] | None = None
    ) -> None:
        self.settings = core.settings
        self.tasks = core.tasks
        self.outbox = core.outbox
        self.storage = core.storage
        self.webhooks = core.webhooks
        self.workers = core.workers
        self.deliver = deliver
        self.redispatch = redispatch

    def sweep(self) -> None:
        self.release_dead_leases()
        self.workers.prune()
        if self.redispatch is not None:
            live = list(self.workers.models())  # a model nobody serves: its messages wait in its queue
            ids = self.tasks.needing_dispatch(older_than=max(self.settings.lease_seconds, 30.0), models=live)
            for tid in ids:
                self.redispatch(tid)
        self.resume_webhooks()
        self.delete_expired()

    def release_dead_leases(self) -> int:
        """A task running in a process that died on this host is re-run now, not when its lease ends."""
        n = 0
        for task in self.tasks.list_tasks(status=TaskStatus.PROCESSING, limit=1000):
            if dead_local_worker(task.worker) and self.tasks.expire_lease(task.id, task.attempt):
                log.warning("task %s was running in dead process %s: re-queued", task.id, task.worker)
                n += 1
        return n

    def resume_webhooks(self) -> None:
        stuck_before = time.time() - 2 * self.webhooks.max_duration()
        self.outbox.reset_stuck(stuck_before)
        for tid in self.outbox.pending():
            self.deliver(tid)

    def delete_expired(self) -> None:
        self.storage.delete_old_uploads(time.time() - self.settings.url_ttl_seconds)
        expired = self.tasks.expired(before=time.time() - self.settings.url_ttl_seconds)
        for task in expired:
            self.storage.delete_task_files(task.id)
        self.tasks.mark_files_expired([t.id for t in expired])


class _Loop:
    """A daemon thread calling ``fn`` every ``interval`` seconds until stopped."""

    def __init__(self, name: str, interval: float, fn: Callable[[], None]) -> None:
        self.interval, self.fn = interval, fn
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.fn()
            except Exception:
                log.exception("%s failed", self.thread.name)
            self._stop.wait(self.interval)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)


class EmbeddedDispatcher:
    """Worker threads in this process, woken on submit, polling the store as a fallback."""

    POLL = 0.5

    def __init__(self, core: Core, make_worker: Callable[[Callable[[str], None]], Worker]) -> None:
        self.settings = settings = core.settings
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._webhook_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="qedit-webhook")
        self.workers = [make_worker(self._deliver_async) for _ in range(settings.workers)]
        self._threads: list[threading.Thread] = []
        self.sweeper = Sweeper(core, self._deliver_async)
        self._sweep_loop = _Loop("qedit-sweeper", settings.sweep_interval, self.sweeper.sweep)
        self._deliver = core.webhooks.deliver
        self.load_error: str | None = None

    @property
    def ready(self) -> bool:
        return bool(self.workers) and all(w.ready for w in self.workers)

    def routes(self, model: str) -> bool:
        return False  # its workers are in the registry

    def _deliver_async(self, task_id: str) -> None:
        if not self._stop.is_set():
            self._webhook_pool.submit(self._deliver_logged, task_id)

    def _deliver_logged(self, task_id: str) -> None:
        try:
            self._deliver(task_id)
        except Exception:
            log.exception("webhook for %s failed", task_id)

    def start(self, loops: bool = True) -> None:
        """``loops=False``: load the engines and sweep, but let someone else (the backends router) hand
        the workers their tasks (``Worker.run``) instead of each claiming the oldest."""
        self.sweeper.release_dead_leases()  # before the workers start, so interrupted tasks go first
        for i, worker in enumerate(self.workers):
            target = self._work if loops else self._load
            t = threading.Thread(target=target, args=(worker,), name=f"qedit-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self._sweep_loop.start()

    def _load(self, worker: Worker) -> bool:
        worker.start()
        try:
            _ = worker.engine
        except Exception as e:
            self.load_error = f"{type(e).__name__}: {e}"
            log.exception("the engine failed to load; this worker stops")
            worker.stop()
            return False
        return True

    def _work(self, worker: Worker) -> None:
        if not self._load(worker):
            return
        while not self._stop.is_set():
            self._wake.clear()
            try:
                ran = worker.run_next()
            except Exception:
                log.exception("worker loop error")
                ran = None
                self._stop.wait(1.0)
            if ran is None:
                self._wake.wait(self.POLL)
            else:
                self._wake.set()  # there may be more: let idle siblings look too

    def submit(self, task_id: str, model: str | None = None) -> None:
        self._wake.set()

    def deliver_webhook(self, task_id: str) -> None:
        self._deliver_async(task_id)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + 10  # a running edit is not cut short: if it outlasts this, it is
        for t in self._threads:  # re-run after the restart (its lease names this dead process)
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        for worker in self.workers:
            worker.stop()
        self._sweep_loop.stop()
        self._webhook_pool.shutdown(wait=False, cancel_futures=True)


class CeleryDispatcher:
    """Sends task ids to Celery workers (``qedit worker``); re-sends what a broker may have lost."""

    def __init__(self, core: Core) -> None:
        from qedit.service.celery_app import make_celery

        self.settings = core.settings
        self.tasks = core.tasks
        self.celery = make_celery(core.settings)
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="qedit-webhook")
        self._webhooks = core.webhooks
        self.sweeper = Sweeper(core, self.deliver_webhook, redispatch=self.submit)
        self._sweep_loop = _Loop("qedit-sweeper", core.settings.sweep_interval, self.sweeper.sweep)

    @property
    def ready(self) -> bool:
        return True  # the API is ready; worker readiness is each Celery worker's own

    def routes(self, model: str) -> bool:
        return False  # its workers are in the registry

    def start(self) -> None:
        self._sweep_loop.start()

    def submit(self, task_id: str, model: str | None = None) -> None:
        """Send the id to its model's queue (looked up when the caller does not say, as the sweeper does not)."""
        from qedit.service.celery_app import RUN_TASK, model_queue

        model = model or self.tasks.model_of(task_id)
        if model is None:
            return  # deleted meanwhile
        self.celery.send_task(RUN_TASK, args=[task_id], queue=model_queue(self.settings.celery_queue, model))
        self.tasks.mark_dispatched([task_id])

    def deliver_webhook(self, task_id: str) -> None:
        self._pool.submit(self._webhooks.deliver, task_id)

    def stop(self) -> None:
        self._sweep_loop.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
