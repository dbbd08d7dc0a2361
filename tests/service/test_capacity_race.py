"""A key's concurrency limit holds when its submissions race, on SQLite and on PostgreSQL.

Before the limit was checked inside the insert's transaction, 20 parallel submissions of a key
limited to 2 were all accepted: each counted the active tasks before any of the others inserted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from qedit.params import EditParams
from qedit.service.database import Database
from qedit.service.keys import KeyStore
from qedit.service.records import Interface, NewTask
from qedit.service.tasks import AtCapacity, TaskStore
from tests.support.databases import postgres_schema_url
from tests.support.images import b64, png_bytes
from tests.support.server import Server

PARALLEL = 20
LIMIT = 2


def _race(n: int, attempt: object) -> list[object]:
    """Run ``attempt`` ``n`` times at once (released together by a barrier)."""
    barrier = threading.Barrier(n)

    def one(_: int) -> object:
        barrier.wait()
        return attempt()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def test_store_admits_exactly_the_limit_under_parallel_inserts(db: Database) -> None:
    key = KeyStore(db).create("racer")[0]
    tasks = TaskStore(db)

    def attempt() -> str:
        task = NewTask(interface=Interface.NATIVE, model="instant", params=EditParams(prompt="x"), inputs=[],
                       base_url="http://x", key_id=key.id)  # fmt: skip
        try:
            tasks.add(task, max_active=LIMIT)
            return "stored"
        except AtCapacity as e:
            assert (e.active, e.limit) == (LIMIT, LIMIT)
            return "refused"

    results = _race(PARALLEL, attempt)
    assert results.count("stored") == LIMIT
    assert tasks.active_count(key.id) == LIMIT


@pytest.fixture(params=["sqlite", "postgres"])
def racing_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    env = {"QEDIT_INSTANT_STEP_DELAY": "0.2"}  # tasks stay active for the whole burst
    gen = postgres_schema_url() if request.param == "postgres" else None
    if gen is not None:
        env["QEDIT_DATABASE_URL"] = next(gen)
    srv = Server(tmp_path / "srv", env).start()
    try:
        yield srv
    finally:
        srv.stop()
        if gen is not None:
            next(gen, None)


def test_parallel_submissions_cannot_pass_the_limit(racing_server: Server) -> None:
    key = racing_server.create_key("racer", max_concurrent_tasks=LIMIT)
    body = {"prompt": "x", "images": [b64(png_bytes(size=(384, 384)))], "num_inference_steps": 50}

    with httpx.Client(base_url=racing_server.url, headers={"authorization": f"Bearer {key}"}, timeout=60) as c:
        responses = _race(PARALLEL, lambda: c.post("/v1/edits", json=body))
        codes = sorted(r.status_code for r in responses)  # type: ignore[attr-defined]
        assert codes == [202] * LIMIT + [429] * (PARALLEL - LIMIT), codes
        refused = next(r for r in responses if r.status_code == 429)  # type: ignore[attr-defined]
        assert f"at most {LIMIT}" in refused.json()["error"]["message"]  # type: ignore[attr-defined]
        assert refused.headers["retry-after"]  # type: ignore[attr-defined]
        listed = c.get("/v1/edits").json()["data"]
        assert len(listed) == LIMIT
        for task in listed:
            c.delete(f"/v1/edits/{task['id']}")
    # the refused submissions left no files behind: only the accepted tasks' inputs exist
    inputs = [p for p in (racing_server.data_dir / "inputs").glob("*/*") if p.is_dir()]
    assert len(inputs) == LIMIT
