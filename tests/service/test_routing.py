"""Routing by model on the real Redis and Postgres: ``qedit worker`` processes of the tiny preset share
tasks, survive a ``kill -9`` without losing or repeating one, and tasks wait while no worker is live;
a task running in a worker process is cancelled through the API; a worker never takes another
model's task. Skips, saying why, when Redis or Postgres is not reachable on loopback.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from qedit.service.database import Database
from qedit.service.records import TaskStatus
from qedit.service.tasks import TaskStore
from tests.support.databases import postgres_schema_url
from tests.support.images import b64, png_bytes
from tests.support.server import Server, wait_status
from tests.support.workers import WorkerProcess


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from postgres_schema_url()


def _env(redis_url: str, pg_url: str, **extra: str) -> dict[str, str]:
    return {
        "QEDIT_DISPATCH": "celery",
        "QEDIT_BROKER_URL": redis_url,
        "QEDIT_CELERY_QUEUE": f"qedit-{uuid.uuid4().hex[:8]}",  # this test's queues only
        "QEDIT_DATABASE_URL": pg_url,
        "QEDIT_AUTH": "none",
        "QEDIT_SECRET": "test-secret",
        "QEDIT_LEASE_SECONDS": "5",
        "QEDIT_SWEEP_INTERVAL": "0.5",
        "QEDIT_WORKER_TTL": "3",
        **extra,
    }


def _until(what: Callable[[], object], timeout: float, message: Callable[[], str]) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(message())


def _workers(c: httpx.Client) -> list[dict]:
    return c.get("/v1/workers").json()["data"]


def test_tiny_workers_share_tasks_survive_a_kill_and_wait_for_a_return(
    tmp_path: Path, redis_url: str, pg_url: str, tiny_path: Path
) -> None:
    api = Server(tmp_path, _env(redis_url, pg_url, QEDIT_MODEL="tiny")).start()
    env = {**api.env(), "OMP_NUM_THREADS": "1"}  # two torch processes on a small machine: no oversubscription
    workers = [WorkerProcess(env, tmp_path / f"worker-{i}.log", "--model", "tiny", "--device", "cpu") for i in (1, 2)]
    store = Database(pg_url)
    tasks = TaskStore(store)
    logs = lambda: "\n".join(w.tail() for w in workers) + api.log()  # noqa: E731
    try:
        with api.client(timeout=60) as c:
            _until(lambda: len([w for w in _workers(c) if w["state"] == "idle"]) == 2, 120, logs)
            assert {w["model"] for w in _workers(c)} == {"tiny"}
            assert httpx.get(f"{api.url}/readyz").json()["models"] == {"tiny": 2}

            body = {
                "prompt": "x",
                "images": [b64(png_bytes((384, 384)))],
                "num_inference_steps": 2,
                "true_cfg_scale": 1.0,
            }
            ids = [c.post("/v1/edits", json={**body, "seed": i}).json()["id"] for i in range(20)]

            # both take some, then one is killed while it runs a task
            def both_done_one_and_first_busy() -> str | None:
                rows = {w["id"]: w for w in _workers(c)}
                mine = [w for w in rows.values() if workers[0].tag in w["id"]]
                both = len(rows) == 2 and all(w["tasks_done"] >= 1 for w in rows.values())
                if both and mine and mine[0]["state"] == "busy" and mine[0]["task_id"]:
                    return mine[0]["task_id"]
                return None

            victim = _until(both_done_one_and_first_busy, 120, logs)
            workers[0].kill()

            done = [wait_status(c, i, timeout=120) for i in ids]
            assert [t["status"] for t in done] == ["completed"] * 20, (done, logs())
            assert [[o["seed"] for o in t["outputs"]] for t in done] == [[i] for i in range(20)]
            records = {t.id: t for t in (tasks.get(i) for i in ids) if t is not None}
            assert records[str(victim)].attempt == 2 and workers[1].tag in str(records[str(victim)].worker)
            ran = {w.tag for w in workers for t in records.values() if w.tag in str(t.worker)}
            assert ran == {workers[0].tag, workers[1].tag}  # both did work
            for i in ids:  # one output set each: the killed attempt left no file behind
                assert [p.name for p in (tmp_path / "outputs" / i[:2] / i).iterdir()] == [records[i].outputs[0].name]

            # every worker stopped: tasks wait, queued; one returns: they complete
            workers[1].stop()
            _until(lambda: _workers(c) == [], 10, logs)  # a clean stop leaves the registry
            assert httpx.get(f"{api.url}/readyz").json()["models"] == {"tiny": 0}
            later = [c.post("/v1/edits", json={**body, "seed": 100 + i}).json()["id"] for i in range(3)]
            time.sleep(2)
            assert {tasks.get(i).status for i in later} == {TaskStatus.CREATED}
            workers.append(WorkerProcess(env, tmp_path / "worker-3.log", "--model", "tiny", "--device", "cpu"))
            back = [wait_status(c, i, timeout=120) for i in later]
            assert [t["status"] for t in back] == ["completed"] * 3, (back, logs())
            assert all(workers[2].tag in str(tasks.get(i).worker) for i in later)
    finally:
        for w in workers:
            w.stop()
        api.stop()
        store.close()


def test_a_task_in_a_worker_process_is_cancelled_and_other_models_tasks_are_left(
    tmp_path: Path, redis_url: str, pg_url: str
) -> None:
    env = _env(redis_url, pg_url, QEDIT_MODEL="instant", QEDIT_MODELS="tiny", QEDIT_INSTANT_STEP_DELAY="0.1")
    env["QEDIT_INSTANT_STEPS"] = "100"  # 10 s if nobody cancels
    api = Server(tmp_path, env).start()
    worker = WorkerProcess(api.env(), tmp_path / "worker.log", "--model", "instant", "--device", "cpu")
    store = Database(pg_url)
    try:
        with api.client() as c:
            body = {"prompt": "x", "images": [b64(png_bytes())]}
            other = c.post("/v1/edits", json={**body, "model": "tiny"}).json()["id"]
            _until(lambda: _workers(c), 60, worker.tail)
            tid = c.post("/v1/edits", json=body).json()["id"]
            running = wait_status(c, tid, ("processing",), timeout=30)
            assert running["status"] == "processing", worker.tail()
            time.sleep(0.3)
            t0 = time.monotonic()
            assert c.delete(f"/v1/edits/{tid}").status_code == 200
            ended = wait_status(c, tid, timeout=10)
            assert ended["status"] == "cancelled" and time.monotonic() - t0 < 3, ended
            assert ended["progress"]["step"] < ended["progress"]["total"]  # stopped mid-run, not at the end
            task = TaskStore(store).get(other)
            assert task is not None and task.status == TaskStatus.CREATED and task.attempt == 0
    finally:
        worker.stop()
        api.stop()
        store.close()
