"""The sweeper's housekeeping and the embedded dispatcher, in-process against a real store.

Each sweeper duty is called on its own (``release_dead_leases``, ``resume_webhooks``,
``delete_expired``, ``sweep``'s re-dispatch); the embedded dispatcher is started, fed and stopped
as the API does it, with the instant engine in its worker threads.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import update

from qedit.config import Settings
from qedit.models.protocol import EditEngine
from qedit.service.dispatch import EmbeddedDispatcher, Sweeper, dead_local_worker
from qedit.service.instant import InstantEngine
from qedit.service.records import TaskStatus, WebhookState
from qedit.service.tables import TaskRow
from qedit.service.wiring import Core
from qedit.service.worker import Worker, worker_name
from qedit.service.workers import WorkerState
from tests.support.images import png_bytes
from tests.support.receiver import Receiver
from tests.support.tasks import current, queue_edit

HOST = socket.gethostname()


def dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def set_columns(core: Core, task_id: str, **values: Any) -> None:
    """Write columns directly: what a process that died long ago would have left behind."""
    with core.db.transaction() as s:
        s.execute(update(TaskRow).where(TaskRow.id == task_id).values(**values))


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def run_all(core: Core, *task_ids: str) -> None:
    """Run tasks to completion with the webhook left pending (nobody delivers it)."""
    w = Worker(core, engine_factory=lambda s: InstantEngine(), name=worker_name("test"), on_webhook=lambda t: None)
    for tid in task_ids:
        assert w.run_next(tid) is not None


def embedded(core: Core, factory: Callable[[Settings], EditEngine] = lambda s: InstantEngine()) -> EmbeddedDispatcher:
    def make_worker(on_webhook: Callable[[str], None]) -> Worker:
        return Worker(core, engine_factory=factory, name=worker_name("embedded"), on_webhook=on_webhook)

    return EmbeddedDispatcher(core, make_worker)


# -- dead workers -------------------------------------------------------------------------------


def test_dead_local_worker_is_a_dead_pid_on_this_host_only() -> None:
    dead = dead_pid()
    assert dead_local_worker(f"embedded@{HOST}:{dead}:abc123")
    assert not dead_local_worker(f"embedded@{HOST}:{os.getppid()}:abc123")  # alive
    assert not dead_local_worker(f"embedded@{HOST}:{os.getpid()}:abc123")  # this very process
    assert not dead_local_worker(f"embedded@not-{HOST}:{dead}:abc123")  # another host's: its lease decides
    for name in (None, "", "celery", f"embedded@{HOST}:pid:abc123"):
        assert not dead_local_worker(name)


def test_release_dead_leases_requeues_a_task_whose_worker_process_died_on_this_host(core: Core) -> None:
    dead, alive, remote = queue_edit(core), queue_edit(core), queue_edit(core)
    pid = dead_pid()
    owners = {
        dead: f"embedded@{HOST}:{pid}:aaaaaa",
        alive: f"embedded@{HOST}:{os.getppid()}:bbbbbb",
        remote: f"celery@not-{HOST}:{pid}:cccccc",
    }
    for tid, name in owners.items():
        assert core.tasks.claim(name, 600, task_id=tid) is not None
    sweeper = Sweeper(core, deliver=lambda t: None)
    assert sweeper.release_dead_leases() == 1
    again = core.tasks.claim("new@host:1:x", 60)  # claimable now, not in 10 minutes
    assert again is not None and again.id == dead and again.attempt == 2
    for tid in (alive, remote):
        task = core.tasks.get(tid)
        assert task is not None and task.attempt == 1 and task.worker == owners[tid]
        assert task.lease_until is not None and task.lease_until > time.time() + 500
    assert core.tasks.claim("new@host:1:x", 60) is None


def test_sweep_redispatches_queued_tasks_no_broker_was_told_about(core: Core) -> None:
    lost, sent = queue_edit(core), queue_edit(core)
    core.tasks.mark_dispatched([sent])
    redispatched: list[str] = []
    sweeper = Sweeper(core, deliver=lambda t: None, redispatch=redispatched.append)
    sweeper.sweep()
    assert redispatched == []  # no live worker of its model: its message waits in its queue, not re-sent
    core.workers.register("celery@elsewhere:1:a", "instant", device=None, options={}, state=WorkerState.IDLE)
    sweeper.sweep()
    assert redispatched == [lost]


# -- webhooks left behind -----------------------------------------------------------------------


def test_resume_webhooks_redelivers_pending_and_resets_stuck_sending(core: Core, receiver: Receiver) -> None:
    pending, stuck, busy = (queue_edit(core, webhook_url=f"{receiver.url}/{n}") for n in ("pending", "stuck", "busy"))
    run_all(core, pending, stuck, busy)
    assert sorted(core.outbox.pending()) == sorted([pending, stuck, busy])
    for tid in (stuck, busy):
        assert core.outbox.move(tid, WebhookState.SENDING, expect=WebhookState.PENDING)
    set_columns(core, stuck, webhook_started_at=time.time() - 3600)  # its deliverer died an hour ago
    Sweeper(core, deliver=core.webhooks.deliver).resume_webhooks()
    assert sorted(r.path for r in receiver.received) == ["/pending", "/stuck"]
    states = {tid: current(core, tid).webhook_state for tid in (pending, stuck, busy)}
    assert states == {pending: WebhookState.DELIVERED, stuck: WebhookState.DELIVERED, busy: WebhookState.SENDING}


# -- retention ----------------------------------------------------------------------------------


def test_delete_expired_deletes_files_of_finished_tasks_past_the_ttl_and_marks_them(make_core: Any) -> None:
    core: Core = make_core(url_ttl_seconds=60)
    old, recent, running = queue_edit(core), queue_edit(core), queue_edit(core)
    run_all(core, old, recent)
    assert core.tasks.claim("w@host:1:x", 60, task_id=running) is not None
    set_columns(core, old, finished_at=time.time() - 61)
    old_upload = core.storage.absolute(core.storage.write_upload(uuid.uuid4().hex, "a.png", png_bytes()))
    new_upload = core.storage.absolute(core.storage.write_upload(uuid.uuid4().hex, "a.png", png_bytes()))
    os.utime(old_upload.parent, (time.time() - 61, time.time() - 61))
    files = {tid: [core.storage.absolute(i.path) for i in current(core, tid).inputs] for tid in (old, recent, running)}
    for tid in (old, recent):
        files[tid] += [core.storage.absolute(o.file) for o in current(core, tid).outputs]

    Sweeper(core, deliver=lambda t: None).delete_expired()

    gone = core.tasks.get(old)
    assert gone is not None and gone.files_expired and gone.status == TaskStatus.COMPLETED
    assert not any(p.exists() for p in files[old])
    assert core.storage.served_file(old, gone.outputs[0].name) is None
    for tid in (recent, running):
        assert not current(core, tid).files_expired
        assert all(p.is_file() for p in files[tid])
    assert not old_upload.exists() and new_upload.is_file()
    assert core.tasks.expired(before=time.time() - 60) == []  # marked: not looked at again


# -- the embedded dispatcher --------------------------------------------------------------------


def test_embedded_dispatcher_runs_a_submitted_task_end_to_end_and_becomes_ready(
    make_core: Any, receiver: Receiver
) -> None:
    core: Core = make_core(sweep_interval=0.2, workers=2)
    d = embedded(core)
    assert not d.ready and len(d.workers) == 2
    d.start()
    try:
        assert wait_until(lambda: d.ready)
        ids = [queue_edit(core, webhook_url=f"{receiver.url}/{n}") for n in range(3)]
        for tid in ids:
            d.submit(tid)
        assert wait_until(lambda: len(receiver.received) == 3)
        assert wait_until(lambda: all(current(core, t).webhook_state == WebhookState.DELIVERED for t in ids))
    finally:
        d.stop()
    tasks = [current(core, t) for t in ids]
    assert [(t.status, t.attempt, t.n_outputs) for t in tasks] == [(TaskStatus.COMPLETED, 1, 1)] * 3
    assert sorted(r.path for r in receiver.received) == ["/0", "/1", "/2"]  # each delivered once


def test_embedded_dispatcher_start_reruns_a_task_left_by_a_dead_process(make_core: Any) -> None:
    core: Core = make_core(sweep_interval=0.2)
    tid = queue_edit(core)
    assert core.tasks.claim(f"embedded@{HOST}:{dead_pid()}:aaaaaa", 600, task_id=tid) is not None
    d = embedded(core)
    d.start()
    try:
        assert wait_until(lambda: current(core, tid).status == TaskStatus.COMPLETED)
    finally:
        d.stop()
    task = core.tasks.get(tid)
    assert task is not None and task.attempt == 2 and task.worker is not None and task.worker.startswith("embedded@")


def test_embedded_dispatcher_reports_an_engine_that_fails_to_load_and_stays_not_ready(make_core: Any) -> None:
    core: Core = make_core(sweep_interval=0.2)

    def broken(settings: Settings) -> EditEngine:
        raise RuntimeError("no weights in /nowhere")

    d = embedded(core, broken)
    d.start()
    try:
        assert wait_until(lambda: d.load_error is not None)
    finally:
        d.stop()
    assert d.load_error == "RuntimeError: no weights in /nowhere" and not d.ready


def test_an_api_only_dispatcher_is_never_ready(make_core: Any) -> None:
    d = embedded(make_core(workers=0))
    assert d.workers == [] and not d.ready
