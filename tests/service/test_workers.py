"""The worker registry (live, stale, busy/idle, tasks done) and routing by model, on SQLite and Postgres."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable

from sqlalchemy import update

from qedit.params import EditParams
from qedit.service.database import Database
from qedit.service.dispatch import EmbeddedDispatcher, Sweeper
from qedit.service.records import NewTask, TaskStatus
from qedit.service.tables import WorkerRow
from qedit.service.wiring import Core
from qedit.service.worker import Worker, worker_name
from qedit.service.workers import ModelWorkers, Presence, WorkerRegistry, WorkerState, served_model
from tests.support.tasks import queue_edit


def _age(db: Database, worker_id: str, seconds: float) -> None:
    """As if ``worker_id`` had been silent for ``seconds`` (a killed process stops beating)."""
    with db.transaction() as s:
        s.execute(update(WorkerRow).where(WorkerRow.id == worker_id).values(last_heartbeat=time.time() - seconds))


def test_live_workers_by_model_state_and_tasks_done(db: Database) -> None:
    reg = WorkerRegistry(db, ttl=10)
    a, b, c = "celery@gpu1:11:a", "celery@gpu1:12:b", "celery@gpu2:13:c"
    reg.register(a, "Qwen/Qwen-Image-Edit-2509", device="cuda:0", options={"quantize": "int8"}, state=WorkerState.IDLE)
    reg.register(b, "Qwen/Qwen-Image-Edit-2509", device="cuda:1", options={}, state=WorkerState.LOADING)
    reg.register(c, "tiny", device="cpu", options={}, state=WorkerState.IDLE)
    assert reg.update(a, state=WorkerState.BUSY, task_id="t1")
    assert reg.models() == {
        "Qwen/Qwen-Image-Edit-2509": ModelWorkers(workers=2, busy=1, idle=0, loading=1),
        "tiny": ModelWorkers(workers=1, busy=0, idle=1, loading=0),
    }
    first = reg.live("Qwen/Qwen-Image-Edit-2509")[0]
    assert (first.id, first.host, first.pid, first.device, first.state, first.task_id) == (
        a,
        "gpu1",
        11,
        "cuda:0",
        WorkerState.BUSY,
        "t1",
    )
    assert first.options == {"quantize": "int8"} and first.kind == "celery"
    reg.update(a, state=WorkerState.IDLE, done=1)
    reg.update(a, state=WorkerState.IDLE, done=2)
    again = reg.live("Qwen/Qwen-Image-Edit-2509")[0]
    assert (again.state, again.task_id, again.tasks_done) == (WorkerState.IDLE, None, 3)

    _age(db, c, 11)  # silent longer than the ttl: not live, and pruned
    assert [w.id for w in reg.live()] == [a, b] and "tiny" not in reg.models()
    assert reg.prune() == 1
    assert not reg.update(c)  # its row is gone: a worker that comes back registers again
    reg.remove(b)
    assert [w.id for w in reg.live()] == [a]


def test_a_dead_local_process_is_pruned_at_once(db: Database) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = f"celery@{socket.gethostname()}:{proc.stdout.strip()}:zz"  # a process of this host that has exited
    reg = WorkerRegistry(db, ttl=60)
    reg.register(dead, "tiny", device="cpu", options={}, state=WorkerState.BUSY)
    reg.register(worker_name("celery"), "tiny", device="cpu", options={}, state=WorkerState.IDLE)  # this process
    assert reg.prune() == 1 and [w.model for w in reg.live()] == ["tiny"]


def test_presence_beats_and_a_clean_stop_leaves(db: Database) -> None:
    reg = WorkerRegistry(db, ttl=1.5)  # a beat every 0.5 s
    p = Presence(reg, "embedded@h:1:p", "instant", None, {"batch_size": 1})
    p.set(WorkerState.BUSY)  # not started: nothing written
    assert reg.live() == []
    p.start()
    try:
        p.set(WorkerState.IDLE, done=2)
        _age(db, p.worker_id, 100)
        reg.prune()  # pruned while silent (a long pause): the next beat puts it back, tasks_done kept
        time.sleep(0.8)
        [row] = reg.live()
        assert (row.state, row.tasks_done) == (WorkerState.IDLE, 2)
        time.sleep(1.7)  # longer than the ttl: the heartbeat kept it live
        assert [w.id for w in reg.live()] == [p.worker_id]
    finally:
        p.stop()
    assert reg.live() == []


def test_a_worker_claims_only_tasks_of_its_model(make_core: Callable[..., Core]) -> None:
    core = make_core()  # model instant
    other = NewTask(interface="native", model="tiny", params=EditParams(prompt="x"), inputs=[], base_url="http://x")
    tiny = core.tasks.add(other).id
    mine = queue_edit(core)
    w = Worker(core, name=worker_name("test"))
    ran = w.run_next()
    assert ran is not None and ran.id == mine and ran.status == TaskStatus.COMPLETED
    assert w.run_next() is None and w.run_next(tiny) is None  # even asked by id (a stray message)
    assert core.tasks.get(tiny).status == TaskStatus.CREATED
    assert core.tasks.queued(model="instant") == [] and [t.id for t in core.tasks.queued(model="tiny")] == [tiny]
    claimed = core.tasks.claim("tiny@h:1:x", 60, model="tiny")
    assert claimed is not None and claimed.id == tiny


def test_embedded_workers_register_work_and_leave(make_core: Callable[..., Core]) -> None:
    core = make_core(instant_step_delay=0.05, worker_ttl=3)
    d = EmbeddedDispatcher(core, lambda hook: Worker(core, name=worker_name("embedded"), on_webhook=hook))
    ids = [queue_edit(core) for _ in range(2)]
    d.start()
    try:
        deadline = time.monotonic() + 15
        busy_seen = False
        while time.monotonic() < deadline:
            rows = core.workers.live()
            busy_seen |= any(r.state == WorkerState.BUSY and r.task_id in ids for r in rows)
            if all(core.tasks.get(t).status == TaskStatus.COMPLETED for t in ids):
                break
            time.sleep(0.02)
        [row] = core.workers.live()
        assert busy_seen and row.kind == "embedded" and row.model == "instant"
        assert (row.state, row.task_id, row.tasks_done) == (WorkerState.IDLE, None, 2)
        assert {core.tasks.get(t).worker for t in ids} == {row.id}
    finally:
        d.stop()
    assert core.workers.live() == []


def test_the_sweeper_prunes_stale_workers(core: Core) -> None:
    core.workers.register("celery@elsewhere:1:a", "tiny", device=None, options={}, state=WorkerState.IDLE)
    _age(core.db, "celery@elsewhere:1:a", core.settings.worker_ttl + 1)
    Sweeper(core, deliver=lambda t: None).sweep()
    with core.db.transaction() as s:
        assert s.get(WorkerRow, "celery@elsewhere:1:a") is None


def test_a_model_is_stored_under_its_canonical_id(tmp_path) -> None:
    snap = tmp_path / "snap"
    snap.mkdir()
    assert served_model("instant") == "instant" and served_model("tiny") == "tiny"
    assert served_model("qwen-image-edit-2509") == "Qwen/Qwen-Image-Edit-2509"
    assert served_model(f"{tmp_path}/./snap/") == str(snap.resolve())
