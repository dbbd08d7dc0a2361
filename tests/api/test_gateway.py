"""A qedit server as a gateway in front of two others (real servers on loopback, the instant engine).

The gateway has no workers of its own (``workers=0``): every task goes to a backend. ``cheap`` and
``dear`` are qedit servers with two workers each, listed with a cap of 2 and prices 0.01 and 0.05.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import data_uri, png_bytes
from tests.support.server import Server, wait_status

# 8 steps of 0.15 s: a task lasts ~1.2 s on a backend, long enough to kill one (or cancel) under it
SMALL = {"QEDIT_MIN_SIDE": "16", "QEDIT_INSTANT_STEP_DELAY": "0.15", "QEDIT_INSTANT_STEPS": "8"}
IMAGE = data_uri(png_bytes((64, 48)))


def _backend(name: str, url: str, price: float, cap: int = 2, **extra: str) -> str:
    lines = [
        "[[backend]]",
        f'name = "{name}"',
        f'url = "{url}"',
        f"price_per_image = {price}",
        f"max_concurrency = {cap}",
        'models = ["*"]',
        "health_interval = 0.5",
        "poll_interval = 0.05",
    ]
    lines.insert(1, f'kind = "{extra.pop("kind", "qedit")}"')
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    return "\n".join(lines) + "\n\n"


@pytest.fixture(scope="module")
def remotes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    env = {**SMALL, "QEDIT_AUTH": "none", "QEDIT_WORKERS": "2", "QEDIT_MIN_SIDE": "40"}
    servers = {
        "cheap": Server(tmp_path_factory.mktemp("cheap"), env).start(),
        "dear": Server(tmp_path_factory.mktemp("dear"), env).start(),
    }
    yield servers
    for s in servers.values():
        s.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, remotes: dict[str, Server]) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("gateway")
    file = folder / "backends.toml"
    file.write_text(_backend("dear", remotes["dear"].url, 0.05) + _backend("cheap", remotes["cheap"].url, 0.01))
    env = {
        **SMALL,
        "QEDIT_WORKERS": "0",
        "QEDIT_BACKENDS_FILE": str(file),
        "QEDIT_BACKEND_BACKOFF": "0.3",
        "QEDIT_BACKEND_BACKOFF_MAX": "1",
        "QEDIT_MAX_CONCURRENT_TASKS": "100",
    }
    srv = Server(folder, env).start()
    yield srv
    srv.stop()


def _submit(c: httpx.Client, n: int) -> list[str]:
    ids = []
    for i in range(n):
        r = c.post("/v1/edits", json={"images": [IMAGE], "prompt": f"edit {i}", "seed": i})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def _backends(c: httpx.Client) -> dict[str, dict]:
    r = c.get("/v1/backends")
    assert r.status_code == 200, r.text
    return {b["name"]: b for b in r.json()["data"]}


def _wait_state(c: httpx.Client, name: str, state: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = _backends(c)[name]
        if b["state"] == state:
            return b
        time.sleep(0.1)
    return _backends(c)[name]


def _completions(server: Server) -> int:
    with server.client() as c:
        return sum(1 for t in c.get("/v1/edits", params={"limit": 100}).json()["data"] if t["status"] == "completed")


def test_price_order_then_failover_after_a_kill(gateway: Server, remotes: dict[str, Server]) -> None:
    key = gateway.create_key("burst")
    with gateway.client(key) as c:
        backends = _backends(c)
        assert [b["name"] for b in c.get("/v1/backends").json()["data"]] == ["cheap", "dear"]  # price order
        assert backends["cheap"]["state"] == backends["dear"]["state"] == "up"

        # both up: the cheap one takes what its cap allows, the next two go to the dear one, the rest wait
        ids = _submit(c, 8)
        time.sleep(0.3)
        running = {b["name"]: b["in_flight"] for b in _backends(c).values()}
        assert running == {"cheap": 2, "dear": 2}

        # the cheap one finishes its first two, takes two more, and is killed with those on it
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            views = [c.get(f"/v1/edits/{i}").json() for i in ids]
            running = [v for v in views[2:] if v["attempts"] and v["attempts"][-1]["outcome"] == "running"]
            on_cheap = [v for v in running if v["attempts"][-1]["backend"] == "cheap"]
            if [v["backend"] for v in views[:2]] == ["cheap", "cheap"] and len(on_cheap) == 2:
                break
            time.sleep(0.02)
        remotes["cheap"].kill()
        tasks = [wait_status(c, i, timeout=60) for i in ids]

        assert [t["status"] for t in tasks] == ["completed"] * 8
        for t in tasks:
            assert len(t["outputs"]) == 1
            assert c.get(t["outputs"][0]["url"]).status_code == 200
            assert t["attempts"][-1]["outcome"] == "completed"
            assert t["backend"] == t["attempts"][-1]["backend"]
        served = [t["backend"] for t in tasks]
        assert served[:2] == ["cheap", "cheap"]  # the first two finished on the cheap one before the kill
        killed_on = {v["id"] for v in on_cheap}
        failed_over = [t for t in tasks if t["attempts"][0]["outcome"] == "failed"]
        assert killed_on <= {t["id"] for t in failed_over}, [t["attempts"] for t in tasks]
        for t in failed_over:
            assert [a["backend"] for a in t["attempts"]] == ["cheap", "dear"]
            assert t["attempts"][0]["error"]
            assert t["backend"] == "dear"
        assert all(v["attempts"][-1]["remote_id"] for v in on_cheap)  # the chain names the remote task

        # exactly once: each remote completed only the tasks it served
        assert _completions(remotes["dear"]) == served.count("dear")

        # cost: each task at the price of the backend that served it
        usage = c.get("/v1/usage").json()
        want = served.count("cheap") * 0.01 + served.count("dear") * 0.05
        assert usage["cost"] == pytest.approx(want)
        assert {g["backend"]: g["images"] for g in usage["by_backend"]} == {
            name: served.count(name) for name in set(served)
        }

        # the killed backend is marked down, and comes back after a health check once restarted
        down = _wait_state(c, "cheap", "down")
        assert down["state"] == "down" and down["last_error"]
        remotes["cheap"].start()
        assert _wait_state(c, "cheap", "up")["state"] == "up"
        again = wait_status(c, _submit(c, 1)[0])
        assert again["status"] == "completed" and again["backend"] == "cheap"


def test_a_request_the_remote_refuses_is_not_tried_elsewhere(gateway: Server, remotes: dict[str, Server]) -> None:
    # 32 px a side: the gateway takes it (min side 16), the remotes refuse it (min side 40) with a 400
    key = gateway.create_key("refused")
    with gateway.client(key) as c:
        r = c.post("/v1/edits", json={"images": [data_uri(png_bytes((32, 32)))], "prompt": "x"})
        assert r.status_code == 202, r.text
        t = wait_status(c, r.json()["id"])
    assert t["status"] == "failed" and t["error"]["reason"] == "invalid_input"
    assert len(t["attempts"]) == 1 and t["attempts"][0]["outcome"] == "rejected"
    assert t["attempts"][0]["status_code"] == 400
    assert "40" in t["error"]["message"]


def test_cancel_through_the_gateway_reaches_the_remote(gateway: Server, remotes: dict[str, Server]) -> None:
    key = gateway.create_key("cancel")
    with gateway.client(key) as c:
        tid = c.post("/v1/edits", json={"images": [IMAGE], "prompt": "x"}).json()["id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # running on a remote (the chain shows the attempt in progress)
            attempts = c.get(f"/v1/edits/{tid}").json()["attempts"]
            if attempts and attempts[-1]["outcome"] == "running":
                break
            time.sleep(0.02)
        c.delete(f"/v1/edits/{tid}")
        t = wait_status(c, tid)
    assert t["status"] == "cancelled", t
    name, rid = t["attempts"][-1]["backend"], t["attempts"][-1]["remote_id"]
    with remotes[name].client() as rc:
        assert wait_status(rc, rid)["status"] == "cancelled"


def test_a_wavespeed_backend_with_a_key(tmp_path: Path, remotes: dict[str, Server]) -> None:
    """A WaveSpeed v3 API (here a qedit server's /api/v3, keys on) with the operator's key from a variable."""
    hosted = Server(tmp_path / "hosted", SMALL).start()
    try:
        remote_key = hosted.create_key("operator")
        file = tmp_path / "backends.toml"
        file.write_text(_backend("ws", hosted.url, 0.02, kind="wavespeed", key_env="WS_KEY"))
        env = {**SMALL, "QEDIT_WORKERS": "0", "QEDIT_BACKENDS_FILE": str(file), "QEDIT_AUTH": "none"}
        gw = Server(tmp_path / "gw", {**env, "WS_KEY": remote_key}).start()
        try:
            with gw.client() as c:
                t = wait_status(c, _submit(c, 1)[0])
                assert t["status"] == "completed", t
                assert t["backend"] == "ws" and t["attempts"][0]["kind"] == "wavespeed"
                assert c.get(t["outputs"][0]["url"]).status_code == 200
                assert c.get("/v1/usage").json()["cost"] == pytest.approx(0.02)
                assert remote_key not in gw.log()
        finally:
            gw.stop()
    finally:
        hosted.stop()


def test_local_workers_are_one_backend_among_others(tmp_path: Path, remotes: dict[str, Server]) -> None:
    """The server's own worker, cheapest, takes what it can; the overflow goes to the remote at its price."""
    file = tmp_path / "backends.toml"
    local = '[[backend]]\nname = "here"\nkind = "local"\nprice_per_image = 0.001\n\n'
    file.write_text(local + _backend("dear", remotes["dear"].url, 0.05, cap=2))
    env = {**SMALL, "QEDIT_WORKERS": "1", "QEDIT_BACKENDS_FILE": str(file), "QEDIT_AUTH": "none"}
    gw = Server(tmp_path / "gw", env).start()
    try:
        with gw.client() as c:
            assert [(b["name"], b["max_concurrency"]) for b in c.get("/v1/backends").json()["data"]] == [
                ("here", 1),
                ("dear", 2),
            ]
            tasks = [wait_status(c, i, timeout=30) for i in _submit(c, 3)]
            assert [t["status"] for t in tasks] == ["completed"] * 3
            served = [t["backend"] for t in tasks]
            assert served == ["here", "dear", "dear"], served
            assert tasks[0]["attempts"][0]["kind"] == "local"
            usage = c.get("/v1/usage").json()
            assert usage["cost"] == pytest.approx(0.001 + 2 * 0.05)
    finally:
        gw.stop()


def test_a_gateway_killed_mid_burst_finishes_its_tasks_after_a_restart(
    tmp_path: Path, remotes: dict[str, Server]
) -> None:
    """The router's leases name its dead process: the restarted gateway takes the tasks again at once."""
    file = tmp_path / "backends.toml"
    file.write_text(_backend("dear", remotes["dear"].url, 0.05, cap=2))
    env = {**SMALL, "QEDIT_WORKERS": "0", "QEDIT_BACKENDS_FILE": str(file), "QEDIT_AUTH": "none"}
    gw = Server(tmp_path / "gw", env).start()
    try:
        with gw.client() as c:
            ids = _submit(c, 4)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # two of them running on the remote
                views = [c.get(f"/v1/edits/{i}").json() for i in ids]
                if sum(1 for v in views if v["attempts"] and v["attempts"][-1]["outcome"] == "running") == 2:
                    break
                time.sleep(0.02)
            gw.kill()
            gw.start()
            tasks = [wait_status(c, i, timeout=30) for i in ids]
        assert [t["status"] for t in tasks] == ["completed"] * 4
        interrupted = [t for t in tasks if t["attempts"][0]["outcome"] == "interrupted"]
        assert len(interrupted) == 2, [t["attempts"] for t in tasks]
        for t in interrupted:
            assert [a["outcome"] for a in t["attempts"]] == ["interrupted", "completed"]
            assert t["attempt"] == 2 and len(t["outputs"]) == 1
    finally:
        gw.stop()


def test_a_gateway_on_s3_with_webhooks_tells_who_served_each_task(tmp_path: Path, remotes: dict[str, Server]) -> None:
    """The parts together: the gateway's inputs and outputs in a bucket (read to send to a remote, the
    remote's outputs written back), and each webhook carrying the chain, for a local task too."""
    import json

    from tests.support.receiver import Receiver
    from tests.support.s3 import MotoS3

    s3, receiver = MotoS3(), Receiver()
    bucket = s3.new_bucket()
    file = tmp_path / "backends.toml"
    local = '[[backend]]\nname = "here"\nkind = "local"\nprice_per_image = 0.001\n\n'
    file.write_text(local + _backend("dear", remotes["dear"].url, 0.05, cap=2))
    env = {
        **SMALL,
        **s3.env(bucket),
        "QEDIT_WORKERS": "1",
        "QEDIT_BACKENDS_FILE": str(file),
        "QEDIT_AUTH": "none",
        "QEDIT_ALLOW_PRIVATE_URLS": "1",
        "QEDIT_ALLOW_HTTP_URLS": "1",
    }
    gw = Server(tmp_path / "gw", env).start()
    try:
        with gw.client() as c:
            body = {"images": [IMAGE], "prompt": "x", "webhook_url": receiver.url + "/hook"}
            ids = [c.post("/v1/edits", json={**body, "seed": i}).json()["id"] for i in range(2)]
            tasks = {t["id"]: t for t in (wait_status(c, i, timeout=30) for i in ids)}
            assert sorted(t["backend"] for t in tasks.values()) == ["dear", "here"], tasks
            for t in tasks.values():
                url = t["outputs"][0]["url"]
                assert url.startswith(f"{s3.endpoint}/{bucket}/outputs/"), url  # the remote's output, stored here
                assert httpx.get(url).content[:8] == b"\x89PNG\r\n\x1a\n"
            hooks = {json.loads(r.body)["id"]: json.loads(r.body) for r in receiver.wait_for(2)}  # the native view
            assert set(hooks) == set(ids)
            for tid, hook in hooks.items():
                assert hook["backend"] == tasks[tid]["backend"], hook  # the chain is written before the webhook
                assert [a["outcome"] for a in hook["attempts"]] == ["completed"], hook
        assert not (gw.data_dir / "outputs").exists()
    finally:
        gw.stop()
        receiver.close()
        s3.stop()


def test_refusing_without_workers_counts_a_backend_that_is_up(tmp_path: Path, remotes: dict[str, Server]) -> None:
    """``QEDIT_NO_WORKER=refuse`` on a gateway with no workers of its own: a backend that is up serves
    the model, so requests are taken; with no backend up they are refused with the 503 the setting names."""
    file = tmp_path / "backends.toml"
    file.write_text(_backend("dear", remotes["dear"].url, 0.05) + _backend("gone", "http://127.0.0.1:9", 0.01))
    env = {**SMALL, "QEDIT_WORKERS": "0", "QEDIT_BACKENDS_FILE": str(file), "QEDIT_AUTH": "none"}
    gw = Server(tmp_path / "gw", {**env, "QEDIT_NO_WORKER": "refuse"}).start()
    try:
        with gw.client() as c:
            task = wait_status(c, _submit(c, 1)[0], timeout=30)
            assert task["status"] == "completed" and task["backend"] == "dear", task
    finally:
        gw.stop()
    file.write_text(_backend("gone", "http://127.0.0.1:9", 0.01))
    gw = Server(tmp_path / "gw2", {**env, "QEDIT_NO_WORKER": "refuse"}).start(wait_ready=False)
    try:
        with gw.client() as c:
            deadline = time.monotonic() + 10  # the first health check marks the dead backend down
            while c.get("/v1/backends").json()["data"][0]["state"] == "up" and time.monotonic() < deadline:
                time.sleep(0.1)
            r = c.post("/v1/edits", json={"images": [IMAGE], "prompt": "x"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "no_worker", r.text
    finally:
        gw.stop()


def _scrape(c: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    r = c.get("/metrics")
    assert r.status_code == 200, r.text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_the_gateways_metrics_count_each_backends_attempts_as_the_chains_say(
    tmp_path: Path, remotes: dict[str, Server]
) -> None:
    """A backend that refuses connections (no health path: tasks find out) in front of a good one:
    the per-backend attempt counters are the chains' attempts, and the tasks the router ended on the
    remote are in the task metrics, failures by reason included."""
    file = tmp_path / "backends.toml"
    gone = _backend("gone", "http://127.0.0.1:9", 0.001, kind="wavespeed")  # nothing listens on port 9
    file.write_text(gone + _backend("dear", remotes["dear"].url, 0.05))
    env = {**SMALL, "QEDIT_WORKERS": "0", "QEDIT_BACKENDS_FILE": str(file), "QEDIT_AUTH": "none"}
    gw = Server(tmp_path / "gw", {**env, "QEDIT_BACKEND_BACKOFF": "0.2"}).start()
    try:
        with gw.client() as c:
            before = _scrape(c)
            assert before[("qedit_backend_attempts_total", (("backend", "dear"), ("outcome", "completed")))] == 0
            ids = _submit(c, 4)
            # 32 px a side: the remote refuses it (min side 40), a failure by reason invalid_input
            r = c.post("/v1/edits", json={"images": [data_uri(png_bytes((32, 32)))], "prompt": "small"})
            ids.append(r.json()["id"])
            tasks = [wait_status(c, i, timeout=30) for i in ids]
            assert [t["status"] for t in tasks] == ["completed"] * 4 + ["failed"], tasks
            assert any(a["backend"] == "gone" and a["outcome"] == "failed" for t in tasks for a in t["attempts"])

            def counted() -> dict[tuple[str, str], float]:
                m = _scrape(c)
                return {
                    (dict(k)["backend"], dict(k)["outcome"]): v
                    for (name, k), v in m.items()
                    if name == "qedit_backend_attempts_total" and v
                }

            chains: dict[tuple[str, str], float] = {}
            for t in tasks:
                for a in t["attempts"]:
                    chains[(a["backend"], a["outcome"])] = chains.get((a["backend"], a["outcome"]), 0) + 1
            deadline = time.monotonic() + 5  # the last task's end is observed just after it is recorded
            while (m := _scrape(c))[("qedit_task_seconds_count", (("status", "failed"),))] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert counted() == chains
            assert chains[("dear", "completed")] == 4 and chains[("dear", "rejected")] == 1
            seconds = sum(v for (name, k), v in m.items() if name == "qedit_backend_attempt_seconds_count")
            assert seconds == sum(chains.values())

            assert m[("qedit_task_seconds_count", (("status", "completed"),))] == 4
            assert m[("qedit_task_seconds_count", (("status", "failed"),))] == 1
            assert m[("qedit_queue_wait_seconds_count", ())] == 5
            assert m[("qedit_task_failures_total", (("reason", "invalid_input"),))] == 1
            assert m[("qedit_tasks_failed", (("reason", "invalid_input"),))] == 1  # the store agrees

            view = _backends(c)
            up = {"up": 1.0, "half-open": 0.5, "down": 0.0}
            for name in ("gone", "dear"):
                assert m[("qedit_backend_in_flight", (("backend", name),))] == 0
                assert m[("qedit_backend_up", (("backend", name),))] == up[view[name]["state"]]
                assert m[("qedit_backend_price_per_image", (("backend", name),))] == view[name]["price_per_image"]
                assert m[("qedit_backend_max_concurrency", (("backend", name),))] == 2
            assert view["dear"]["state"] == "up"
    finally:
        gw.stop()
