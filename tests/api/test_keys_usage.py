"""Keys, usage and per-key limits (429 with Retry-After)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.images import b64, png_bytes
from tests.support.server import Server, free_port, wait_status


def test_usage_counts_images_compute_and_cost(server: Server, client: httpx.Client) -> None:
    assert client.get("/v1/usage").json()["images"] == 0
    for n in (1, 2):
        task = client.post("/v1/edits", json={"prompt": "x", "images": [b64(png_bytes())], "num_images": n}).json()
        assert wait_status(client, task["id"])["status"] == "completed"
    wait_status(client, client.post("/v1/edits", json={"prompt": "[fail]", "images": [b64(png_bytes())]}).json()["id"])
    usage = client.get("/v1/usage").json()
    assert (usage["tasks"], usage["completed"], usage["failed"], usage["images"]) == (3, 2, 1, 3)
    assert usage["price_per_image"] == 0.0319 and usage["cost"] == round(3 * 0.0319, 6)
    assert usage["compute_seconds"] > 0 and usage["key"]["name"] == "test"
    with server.client(server.create_key("fresh")) as other:
        assert other.get("/v1/usage").json()["images"] == 0


def test_requests_per_minute_limit_answers_429_with_retry_after(server: Server) -> None:
    with server.client(server.create_key("rpm", rate_limit_rpm=3)) as c:
        assert [c.get("/v1/edits").status_code for _ in range(3)] == [200, 200, 200]
        r = c.get("/v1/edits")
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
        assert "3 requests per minute" in r.json()["error"]["message"]


def test_rate_limit_is_shared_between_api_processes_through_redis(tmp_path: Path, redis_url: str) -> None:
    """Two API servers on one store and one Redis: a key gets its limit once, not once per process."""
    env = {
        "QEDIT_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
        "QEDIT_RATE_LIMIT_URL": redis_url,
        "QEDIT_WORKERS": "0",
    }
    a, b = Server(tmp_path / "a", env), Server(tmp_path / "b", env)
    try:
        a.start(wait_ready=False), b.start(wait_ready=False)  # API only: no model to be ready
        key = a.create_key("shared", rate_limit_rpm=4)
        with a.client(key) as ca, b.client(key) as cb:
            codes = [c.get("/v1/edits").status_code for c in (ca, cb, ca, cb)]
            assert codes == [200, 200, 200, 200]
            r = cb.get("/v1/edits")
            assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
            assert ca.get("/v1/edits").status_code == 429
    finally:
        a.stop(), b.stop()


def test_shared_limiter_lets_requests_through_when_redis_is_down() -> None:
    from qedit.api.deps import SharedRateLimiter

    limiter = SharedRateLimiter(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    assert [limiter.check("k", 1) for _ in range(3)] == [None, None, None]


def test_concurrent_task_limit_answers_429_and_queues_nothing(server: Server) -> None:
    with server.client(server.create_key("conc", max_concurrent_tasks=2)) as c:
        body = {"prompt": "x", "images": [b64(png_bytes())], "num_inference_steps": 100}
        ids = [c.post("/v1/edits", json=body).json()["id"] for _ in range(2)]
        r = c.post("/v1/edits", json=body)
        assert r.status_code == 429 and r.headers["retry-after"] and "at most 2" in r.json()["error"]["message"]
        assert len(c.get("/v1/edits").json()["data"]) == 2
        for tid in ids:
            c.delete(f"/v1/edits/{tid}")
        wait_status(c, ids[0]), wait_status(c, ids[1])
        assert c.post("/v1/edits", json={**body, "num_inference_steps": 1}).status_code == 202


def test_revoked_key_is_refused(server: Server) -> None:
    from qedit.service.database import Database
    from qedit.service.keys import KeyStore

    secret = server.create_key("gone")
    with server.client(secret) as c:
        assert c.get("/v1/edits").status_code == 200
        db = Database(server.db_url)
        assert KeyStore(db).revoke(secret[:7]) is not None
        db.close()
        r = c.get("/v1/edits")
        assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
