"""Models per request: /v1/models, /v1/workers, /readyz's counts, an unknown model, refuse vs wait.

Two real servers with the instant engine embedded (its worker serves ``instant``) and ``tiny`` named
in ``QEDIT_MODELS`` with no worker: one refuses requests for it, one queues them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.images import b64, png_bytes
from tests.support.server import Server, wait_status

BODY = {"prompt": "x", "images": [b64(png_bytes())], "num_inference_steps": 2}


def _server(tmp_path_factory: pytest.TempPathFactory, no_worker: str) -> Iterator[Server]:
    env = {"QEDIT_MODELS": "tiny", "QEDIT_NO_WORKER": no_worker, "QEDIT_INSTANT_STEP_DELAY": "0.01"}
    srv = Server(tmp_path_factory.mktemp(no_worker), env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server(tmp_path_factory, "refuse")


@pytest.fixture(scope="module")
def waiting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server(tmp_path_factory, "wait")


def _client(server: Server) -> httpx.Client:
    return server.client(server.create_key())


def test_models_workers_and_readiness_say_who_serves_what(waiting: Server) -> None:
    with _client(waiting) as c:
        models = c.get("/v1/models").json()
        assert models["object"] == "list"
        by_id = {m["id"]: m for m in models["data"]}
        assert list(by_id) == ["instant", "tiny"]
        instant, tiny = by_id["instant"], by_id["tiny"]
        assert (instant["object"], instant["owned_by"], instant["default"], instant["workers"]) == (
            "model",
            "qedit",
            True,
            1,
        )
        assert instant["idle"] + instant["busy"] == 1 and instant["max_images"] == 3
        assert (tiny["workers"], tiny["default"], tiny["max_images"]) == (0, False, 1)  # the tiny spec: one image

        [worker] = c.get("/v1/workers").json()["data"]
        assert worker["kind"] == "embedded" and worker["model"] == "instant" and worker["state"] == "idle"
        assert worker["options"]["batch_size"] == 1 and worker["last_heartbeat"].endswith("Z")

        done = wait_status(c, c.post("/v1/edits", json={**BODY, "model": "instant"}).json()["id"])
        assert done["status"] == "completed" and done["model"] == "instant"
        [after] = c.get("/v1/workers").json()["data"]
        assert after["tasks_done"] >= 1 and done["id"] in {t["id"] for t in c.get("/v1/edits").json()["data"]}
    assert httpx.get(f"{waiting.url}/readyz").json()["models"] == {"instant": 1, "tiny": 0}
    assert httpx.get(f"{waiting.url}/v1/models").status_code == 401  # keys needed, as for every /v1 route
    assert httpx.get(f"{waiting.url}/v1/workers").status_code == 401


def test_an_unknown_model_is_refused_naming_the_served_ones(waiting: Server) -> None:
    with _client(waiting) as c:
        r = c.post("/v1/edits", json={**BODY, "model": "qwen-image-edit-2511"})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == "model" and "instant, tiny" in err["message"] and "2511" in err["message"]
        # a dialect's own catalogue name is not an error: it runs on the default model
        agg = c.post("/v1/images/generations", json={"prompt": "x", "image_urls": [BODY["images"][0]]})
        assert agg.status_code == 200, agg.text
        assert agg.json()["model"] == "qwen-image-edit"
        # names that cannot be a path (schemathesis found a 500 on a 600-character one): still a 400
        for name in ("x" * 200, "a/" * 100, "~nosuchuser/snap", "nul\u0000byte"):
            r = c.post("/v1/edits", json={**BODY, "model": name})
            assert r.status_code == 400 and r.json()["error"]["param"] == "model", (name, r.text)
        r = c.post("/v1/edits", json={**BODY, "model": "x" * 201})
        assert r.status_code == 400 and "200" in r.json()["error"]["message"], r.text


def test_the_requested_models_image_limit_applies(waiting: Server) -> None:
    with _client(waiting) as c:
        two = {**BODY, "images": BODY["images"] * 2}
        assert c.post("/v1/edits", json=two).status_code == 202  # instant takes 3
        r = c.post("/v1/edits", json={**two, "model": "tiny"})
        assert r.status_code == 400 and "tiny" in r.json()["error"]["message"], r.text


def test_wait_queues_a_task_no_worker_can_run_and_refuse_says_503(waiting: Server, refusing: Server) -> None:
    with _client(waiting) as c:
        r = c.post("/v1/edits", json={**BODY, "model": "tiny"})
        assert r.status_code == 202, r.text
        queued = r.json()
        assert queued["model"] == "tiny"
        after = wait_status(c, c.post("/v1/edits", json=BODY).json()["id"])  # the instant worker goes on working
        assert after["status"] == "completed"
        time.sleep(0.6)  # the embedded worker polls every 0.5 s: it had its chance to take the tiny task
        assert c.get(f"/v1/edits/{queued['id']}").json()["status"] == "created"
        assert c.delete(f"/v1/edits/{queued['id']}").json()["status"] == "cancelled"
    with _client(refusing) as c:
        r = c.post("/v1/edits", json={**BODY, "model": "tiny"})
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "5"
        err = r.json()["error"]
        assert err["param"] == "model" and err["code"] == "no_worker" and "tiny" in err["message"]
        assert c.post("/v1/edits", json=BODY).status_code == 202  # the default model has its worker
