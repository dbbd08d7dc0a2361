"""Scale-out: the API dispatching through Celery (Redis broker) to ``qedit worker`` processes, Postgres store.

Skips, saying why, when Redis or Postgres is not reachable on loopback.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.databases import postgres_schema_url
from tests.support.images import b64, png_bytes
from tests.support.server import Server, wait_status
from tests.support.workers import WorkerProcess


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from postgres_schema_url()


def test_celery_workers_run_tasks_and_a_killed_worker_loses_nothing(
    tmp_path: Path, redis_url: str, pg_url: str
) -> None:
    queue = f"qedit-{uuid.uuid4().hex[:8]}"
    env = {
        "QEDIT_DISPATCH": "celery",
        "QEDIT_BROKER_URL": redis_url,
        "QEDIT_CELERY_QUEUE": queue,
        "QEDIT_DATABASE_URL": pg_url,
        "QEDIT_AUTH": "none",
        "QEDIT_SECRET": "test-secret",
        "QEDIT_INSTANT_STEP_DELAY": "0.05",
        "QEDIT_LEASE_SECONDS": "5",
        "QEDIT_SWEEP_INTERVAL": "0.5",
    }
    api = Server(tmp_path, env).start()
    worker_env = api.env()
    workers = [WorkerProcess(worker_env, tmp_path / "worker-1.log")]
    try:
        with api.client() as c:
            body = {"prompt": "x", "images": [b64(png_bytes())], "num_inference_steps": 2}
            first = wait_status(c, c.post("/v1/edits", json=body).json()["id"], timeout=60)
            assert first["status"] == "completed", (first, workers[0].log.read_text()[-3000:])

            ids = [
                c.post("/v1/edits", json={**body, "num_inference_steps": 30, "seed": i}).json()["id"] for i in range(3)
            ]
            running = wait_status(c, ids[0], ("processing",), timeout=30)
            assert running["status"] == "processing"
            time.sleep(0.3)
            workers[0].kill()  # mid-task; its message was not acknowledged (acks_late)
            workers.append(WorkerProcess(worker_env, tmp_path / "worker-2.log"))
            done = [wait_status(c, i, timeout=90) for i in ids]
            assert [t["status"] for t in done] == ["completed"] * 3, done
            assert done[0]["attempt"] == 2 and [t["outputs"][0]["seed"] for t in done] == [0, 1, 2]
            assert httpx.get(done[0]["outputs"][0]["url"]).status_code == 200  # the API serves what a worker wrote
    finally:
        for w in workers:
            w.stop()
        api.stop()
