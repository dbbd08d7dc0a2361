"""Crash safety: kill -9 the server mid-task, start it again, and every task finishes exactly once."""

from __future__ import annotations

import json
import time
from pathlib import Path

from qedit.service.database import Database
from qedit.service.records import TaskStatus
from qedit.service.tasks import TaskStore
from tests.support.images import b64, png_bytes
from tests.support.receiver import Receiver
from tests.support.server import Server, wait_status
from tests.support.tasks import add


def test_kill_9_mid_task_then_restart_loses_nothing_and_completes_each_task_once(tmp_path: Path) -> None:
    receiver = Receiver()
    env = {
        "QEDIT_AUTH": "none",
        "QEDIT_INSTANT_STEP_DELAY": "0.05",
        "QEDIT_ALLOW_PRIVATE_URLS": "true",
        "QEDIT_ALLOW_HTTP_URLS": "true",
        "QEDIT_LEASE_SECONDS": "60",
    }
    srv = Server(tmp_path, env).start()
    try:
        with srv.client() as c:
            ids = [
                c.post(
                    "/v1/edits",
                    json={
                        "prompt": f"task {i}",
                        "images": [b64(png_bytes())],
                        "seed": i,
                        "num_inference_steps": 20,
                        "webhook_url": receiver.url,
                    },
                ).json()["id"]
                for i in range(4)
            ]
            running = wait_status(c, ids[0], ("processing",))
            deadline = time.monotonic() + 10
            while running["progress"]["step"] < 3 and time.monotonic() < deadline:
                running = c.get(f"/v1/edits/{ids[0]}").json()
            assert running["status"] == "processing" and running["progress"]["step"] >= 3
        srv.kill()  # mid-task: one running (1 s of steps), three queued

        db = Database(srv.db_url)
        store = TaskStore(db)
        before = {t.id: t for t in (store.get(i) for i in ids) if t is not None}
        assert set(before) == set(ids)  # persisted before the responses: none lost with the process
        assert before[ids[0]].status == TaskStatus.PROCESSING

        srv.start()  # same data dir and database; the lease of the dead process is released at once
        with srv.client() as c:
            done = [wait_status(c, i, timeout=30) for i in ids]
        assert [t["status"] for t in done] == ["completed"] * 4
        assert done[0]["attempt"] == 2 and all(t["attempt"] == 1 for t in done[1:])
        assert [t["outputs"][0]["seed"] for t in done] == [0, 1, 2, 3]
        # the interrupted run left no output behind; the re-run wrote exactly its own
        outputs = sorted(p.name for p in (tmp_path / "outputs").rglob("*.png"))
        assert len(outputs) == 4 and "0-a2.png" in outputs
        # one completion webhook per task, no duplicates across the restart
        receiver.wait_for(4)
        time.sleep(0.5)
        bodies = [json.loads(r.body) for r in receiver.received]
        assert sorted(b["id"] for b in bodies) == sorted(ids) and {b["status"] for b in bodies} == {"completed"}
        db.close()
    finally:
        srv.stop()
        receiver.close()


def test_a_task_that_keeps_killing_its_worker_is_failed_not_retried_forever(tmp_path: Path) -> None:
    """Simulated with expired leases: after max_attempts runs that never finished, the task fails."""
    db = Database(f"sqlite:///{tmp_path / 'q.db'}")
    db.create_schema()
    store = TaskStore(db)
    (task_id,) = add(store)
    for attempt in range(1, 4):
        claimed = store.claim("w", lease_seconds=-1, max_attempts=3)  # the lease is already over: "it died"
        assert claimed is not None and claimed.attempt == attempt
    assert store.claim("w", lease_seconds=60, max_attempts=3) is None
    final = store.get(task_id)
    assert final is not None and final.status == TaskStatus.FAILED and final.error_reason == "crashed"
    db.close()
