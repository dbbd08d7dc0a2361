"""LoRAs and ``fast`` over HTTP: what a request may name (the operator's allow-list), refused at submit
with nothing queued, and recorded in every output (name, sha256, scale) when it runs.

Two servers: the ``instant`` stand-in with a LoRA folder, a hub organisation and a URL host allowed
(dev URL rules, for a local LoRA host), and the real engine on the tiny preset, whose snapshot gives
the shapes a LoRA must fit and the Lightning files ``fast`` needs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import wavespeed

from qedit import imageio
from tests.support.images import b64, png_bytes
from tests.support.loras import LoraFolder, lora_folder, not_a_lora, padded_lora
from tests.support.receiver import Receiver
from tests.support.server import Server, wait_status

OK = b64(png_bytes())
EDIT_LORA = "/api/v3/wavespeed-ai/qwen-image/edit-lora"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory, tiny_path: Path) -> LoraFolder:
    return lora_folder(tmp_path_factory.mktemp("lora-files"), tiny_path)


@pytest.fixture(scope="module")
def lora_server(tmp_path_factory: pytest.TempPathFactory, loras: LoraFolder) -> Iterator[Server]:
    env = {
        "QEDIT_LORA_DIRS": str(loras.folder),
        "QEDIT_LORA_HUB_ORGS": "allowed-org",
        "QEDIT_LORA_URL_HOSTS": "127.0.0.1",
        "QEDIT_ALLOW_PRIVATE_URLS": "true",
        "QEDIT_ALLOW_HTTP_URLS": "true",
    }
    srv = Server(tmp_path_factory.mktemp("lora-srv"), env).start()
    yield srv
    srv.stop()


@pytest.fixture
def lc(lora_server: Server) -> Iterator[httpx.Client]:
    """A client with a key of its own (so its task list starts empty)."""
    with lora_server.client(lora_server.create_key()) as c:
        yield c


def ran(task: dict) -> list[dict]:
    """The LoRAs an output's metadata says ran."""
    return json.loads(task["outputs"][0]["metadata"].get("loras", "[]"))


# -- accepted -----------------------------------------------------------------------------------------


def test_loras_in_the_folder_run_and_are_recorded(lc: httpx.Client, loras: LoraFolder) -> None:
    body = {"prompt": "x", "images": [OK], "loras": [{"path": "style.safetensors", "scale": 0.5}, {"path": "kohya"}]}
    r = lc.post("/v1/edits", json=body)
    assert r.status_code == 202, r.text
    task = wait_status(lc, r.json()["id"])
    assert task["status"] == "completed", task
    assert task["params"]["loras"] == [{"path": "style.safetensors", "scale": 0.5}, {"path": "kohya", "scale": 1.0}]
    assert ran(task) == [
        {"name": "style", "sha256": sha256(loras.style), "scale": 0.5},
        {"name": "kohya", "sha256": sha256(loras.folder / "kohya" / "kohya.safetensors"), "scale": 1.0},
    ]


def test_fast_runs_its_steps_without_cfg(lc: httpx.Client) -> None:
    task = wait_status(lc, lc.post("/v1/edits", json={"prompt": "x", "images": [OK], "fast": 4}).json()["id"])
    meta = task["outputs"][0]["metadata"]
    assert (task["status"], meta["fast"], meta["steps"], meta["cfg"]) == ("completed", "4", "4", "1")
    assert task["params"]["fast"] == 4


@pytest.mark.parametrize(
    ("endpoint", "images"),
    [
        ("edit-lora", {"image": OK}),
        ("edit-plus-lora", {"images": [OK, OK]}),
        ("edit-2511-lora", {"images": [OK]}),
    ],
)
def test_wavespeed_lora_endpoints(lc: httpx.Client, loras: LoraFolder, endpoint: str, images: dict) -> None:
    body = {"prompt": "x", **images, "loras": [{"path": "style.safetensors", "scale": 1.5}], "output_format": "png"}
    r = lc.post(f"/api/v3/wavespeed-ai/qwen-image/{endpoint}", json=body)
    assert r.status_code == 200, r.text
    data = wait_status(lc, r.json()["data"]["id"], path="/api/v3/predictions/{id}/result")["data"]
    assert data["status"] == "completed" and data["model"] == f"wavespeed-ai/qwen-image/{endpoint}"
    meta = imageio.read_metadata(httpx.get(data["outputs"][0]).content)
    assert json.loads(meta["loras"]) == [{"name": "style", "sha256": sha256(loras.style), "scale": 1.5}]


def test_openai_form_takes_loras_as_json_and_fast(lc: httpx.Client, loras: LoraFolder) -> None:
    files = [("image", ("a.png", png_bytes(), "image/png"))]
    form = {"prompt": "x", "loras": json.dumps([{"path": "style.safetensors", "scale": -1}]), "fast": "8"}
    r = lc.post("/v1/images/edits", files=files, data=form)
    assert r.status_code == 200, r.text
    task = lc.get("/v1/edits").json()["data"][0]
    assert ran(task) == [{"name": "style", "sha256": sha256(loras.style), "scale": -1.0}]
    assert task["outputs"][0]["metadata"]["steps"] == "8"
    for bad, field in (
        ("[{", "loras"),
        ('{"path": "style.safetensors"}', "loras"),
        ('[{"path": "x", "scale": 5}]', "loras.0.scale"),
    ):
        r = lc.post("/v1/images/edits", files=files, data={"prompt": "x", "loras": bad})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, (bad, r.text)
    r = lc.post("/v1/images/edits", files=files, data={"prompt": "x", "fast": "4", "num_inference_steps": "20"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "fast"
    assert len(lc.get("/v1/edits").json()["data"]) == 1


def test_aggregator_takes_loras_and_fast(lc: httpx.Client, loras: LoraFolder) -> None:
    body = {"prompt": "x", "image_urls": [OK], "loras": [{"path": "style.safetensors"}], "fast": 4}
    r = lc.post("/v1/images/generations", json=body)
    assert r.status_code == 200, r.text
    task = wait_status(lc, r.json()["task_id"])
    assert task["status"] == "completed" and ran(task)[0]["sha256"] == sha256(loras.style)
    r = lc.post("/v1/images/generations", json={**body, "loras": [{"path": "../outside/style.safetensors"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "loras[0]"


def test_native_upload_takes_loras_in_its_params(lc: httpx.Client, loras: LoraFolder) -> None:
    params = json.dumps({"prompt": "x", "loras": [{"path": "style.safetensors", "scale": 2}]})
    r = lc.post("/v1/edits/upload", files=[("image", ("a.png", png_bytes(), "image/png"))], data={"params": params})
    assert r.status_code == 202, r.text
    assert ran(wait_status(lc, r.json()["id"]))[0]["scale"] == 2.0


# -- refused at submit, nothing queued ------------------------------------------------------------------


def refusals(loras: LoraFolder) -> list[tuple[str, list[dict], str, list[str]]]:
    """(what is wrong, loras, field named, words the message must contain)."""
    outside = str(loras.outside / "style.safetensors")
    return [
        ("absolute path outside", [{"path": outside}], "loras[0]", ["outside the LoRA folders"]),
        ("climbs out", [{"path": "../outside/style.safetensors"}], "loras[0]", ["'..'"]),
        ("symlink escaping", [{"path": "escape.safetensors"}], "loras[0]", ["outside the LoRA folders"]),
        ("symlinked folder", [{"path": "elsewhere/style.safetensors"}], "loras[0]", ["outside the LoRA folders"]),
        ("missing", [{"path": "nope.safetensors"}], "loras[0]", ["no LoRA file nope.safetensors"]),
        ("pickle", [{"path": "weights.bin"}], "loras[0]", ["not a .safetensors file"]),
        ("not a LoRA", [{"path": "not-a-lora.safetensors"}], "loras[0]", ["not a LoRA", "weight"]),
        ("truncated", [{"path": "truncated.safetensors"}], "loras[0]", ["truncated"]),
        ("hub org", [{"path": "someorg/some-lora"}], "loras[0]", ["someorg", "not allowed", "allowed-org"]),
        ("url host", [{"path": "https://example.com/a.safetensors"}], "loras[0]", ["example.com", "not allowed"]),
        ("second one", [{"path": "style.safetensors"}, {"path": "nope.safetensors"}], "loras[1]", ["nope"]),
        ("four", [{"path": "style.safetensors"}] * 4, "loras", ["at most 3"]),
        ("scale", [{"path": "style.safetensors", "scale": 5}], "loras.0.scale", ["4", "5"]),
        ("no path", [{"scale": 1}], "loras.0.path", ["required"]),
        ("unknown key", [{"path": "style.safetensors", "weight": 1}], "loras.0.weight", ["not a known field"]),
    ]


def test_bad_loras_are_refused_naming_the_field_and_nothing_is_queued(lc: httpx.Client, loras: LoraFolder) -> None:
    for case, given, field, words in refusals(loras):
        r = lc.post("/v1/edits", json={"prompt": "x", "images": [OK], "loras": given})
        assert 400 <= r.status_code < 500, (case, r.text)
        err = r.json()["error"]
        assert err["param"] == field, (case, err)
        for word in words:
            assert word in err["message"], (case, word, err["message"])
    assert lc.get("/v1/edits").json()["data"] == []


def test_fast_conflicts_are_refused(lc: httpx.Client) -> None:
    for extra, words in (({"num_inference_steps": 20}, "num_inference_steps=20"), ({"true_cfg_scale": 4}, "cfg")):
        r = lc.post("/v1/edits", json={"prompt": "x", "images": [OK], "fast": 8, **extra})
        assert r.status_code == 400 and r.json()["error"]["param"] == "fast" and words in r.json()["error"]["message"]
    r = lc.post("/v1/edits", json={"prompt": "x", "images": [OK], "fast": 6})
    assert r.status_code == 400 and r.json()["error"]["param"] == "fast"
    assert lc.get("/v1/edits").json()["data"] == []


def test_wavespeed_refusals_use_its_envelope(lc: httpx.Client) -> None:
    r = lc.post(EDIT_LORA, json={"prompt": "x", "image": OK, "loras": [{"path": "escape.safetensors"}]})
    assert r.status_code == 400 and r.json()["field"] == "loras[0]" and r.json()["data"] is None
    r = lc.post(EDIT_LORA, json={"prompt": "x", "image": OK, "loras": [{"path": "style.safetensors"}] * 4})
    assert r.status_code == 400 and r.json()["field"] == "loras"
    r = lc.post(EDIT_LORA, json={"prompt": "x", "image": OK, "lora": "style.safetensors"})
    assert r.status_code == 400 and r.json()["field"] == "lora" and "not a known field" in r.json()["message"]
    plain = {"prompt": "x", "image": OK, "loras": [{"path": "style.safetensors"}]}
    r = lc.post("/api/v3/wavespeed-ai/qwen-image/edit", json=plain)  # the non-LoRA endpoint takes none
    assert r.status_code == 400 and r.json()["field"] == "loras"
    r = lc.post(
        "/api/v3/wavespeed-ai/qwen-image/edit-plus-lora",
        json={"prompt": "x", "images": [OK], "loras": [{"path": "style.safetensors", "scale": -4.5}]},
    )
    assert r.status_code == 400 and r.json()["field"] == "loras.0.scale"
    assert lc.get("/api/v3/predictions").json()["data"]["total"] == 0


# -- LoRAs from an allowed URL host -----------------------------------------------------------------------


@pytest.fixture
def lora_host(tiny_path: Path) -> Iterator[Receiver]:
    host = Receiver()
    host.files["/big.safetensors"] = padded_lora(tiny_path, 48 * 1024 * 1024)
    host.files["/bad.safetensors"] = not_a_lora()
    host.files["/short.safetensors"] = host.files["/big.safetensors"][:4]
    yield host
    host.close()


def test_an_allowed_url_is_checked_by_its_header_at_submit(lc: httpx.Client, lora_host: Receiver) -> None:
    url = f"{lora_host.url}/big.safetensors"
    r = lc.post("/v1/edits", json={"prompt": "x", "images": [OK], "loras": [{"path": url, "scale": 0.25}]})
    assert r.status_code == 202, r.text
    task = wait_status(lc, r.json()["id"], timeout=60)
    assert task["status"] == "completed", task
    size = len(lora_host.files["/big.safetensors"])
    digest = hashlib.sha256(lora_host.files["/big.safetensors"]).hexdigest()
    assert ran(task) == [{"name": "big", "sha256": digest, "scale": 0.25}]
    submit_get, worker_get = lora_host.gets[0], lora_host.gets[1]
    assert submit_get.sent < size // 2, (submit_get, size)  # the API read the header and hung up
    assert worker_get.sent == size  # the worker downloaded (and cached) the file


def test_a_url_that_is_not_a_lora_is_refused_at_submit(lc: httpx.Client, lora_host: Receiver) -> None:
    for path, words in (
        ("/bad.safetensors", "not a LoRA"),
        ("/short.safetensors", "not a safetensors file"),
        ("/missing.safetensors", "HTTP 404"),
    ):
        r = lc.post("/v1/edits", json={"prompt": "x", "images": [OK], "loras": [{"path": lora_host.url + path}]})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "loras[0]" and words in r.json()["error"]["message"], r.text
    assert lc.get("/v1/edits").json()["data"] == []


# -- the real engine (tiny preset) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_lora_server(tmp_path_factory: pytest.TempPathFactory, tiny_path: Path, loras: LoraFolder) -> Iterator[Server]:
    env = {"QEDIT_MODEL": "tiny", "QEDIT_DEVICE": "cpu", "QEDIT_LORA_DIRS": str(loras.folder)}
    srv = Server(tmp_path_factory.mktemp("tiny-lora"), env)
    srv.start(timeout=180)
    yield srv
    srv.stop()


def test_sdk_edit_lora_runs_the_lora_on_the_real_engine(tiny_lora_server: Server, loras: LoraFolder) -> None:
    key = tiny_lora_server.create_key()
    ws = wavespeed.Client(api_key=key, base_url=tiny_lora_server.url, max_connection_retries=0)
    out = ws.run(
        "wavespeed-ai/qwen-image/edit-lora",
        {"prompt": "x", "image": OK, "loras": [{"path": "style.safetensors", "scale": 0.8}], "output_format": "png"},
        poll_interval=0.1,
        timeout=120,
    )
    meta = imageio.read_metadata(httpx.get(out["outputs"][0]).content)
    assert json.loads(meta["loras"]) == [{"name": "style", "sha256": sha256(loras.style), "scale": 0.8}]
    assert meta["model"] == "tiny"
    with tiny_lora_server.client(key) as c:
        assert c.get("/api/v3/predictions").json()["data"]["items"][0]["model"] == "wavespeed-ai/qwen-image/edit-lora"


def test_a_lora_of_other_shapes_is_refused_for_the_served_model(tiny_lora_server: Server) -> None:
    with tiny_lora_server.client(tiny_lora_server.create_key()) as c:
        r = c.post(EDIT_LORA, json={"prompt": "x", "image": OK, "loras": [{"path": "misfit.safetensors"}]})
        assert r.status_code == 400 and r.json()["field"] == "loras[0]", r.text
        assert "does not fit this model" in r.json()["message"]
        assert c.get("/v1/edits").json()["data"] == []


def test_fast_loads_the_lightning_lora_on_the_real_engine(tiny_lora_server: Server) -> None:
    with tiny_lora_server.client(tiny_lora_server.create_key()) as c:
        r = c.post("/v1/edits", json={"prompt": "x", "images": [OK], "fast": 4, "seed": 3})
        task = wait_status(c, r.json()["id"], timeout=120)
    assert task["status"] == "completed", task
    meta = task["outputs"][0]["metadata"]
    assert (meta["fast"], meta["steps"], meta["cfg"]) == ("4", "4", "1")
    assert ran(task)[0]["name"] == "Qwen-Image-Edit-Lightning-4steps-V1.0-bf16"


def test_the_sdk_reports_a_refused_lora(tiny_lora_server: Server) -> None:
    ws = wavespeed.Client(
        api_key=tiny_lora_server.create_key(), base_url=tiny_lora_server.url, max_connection_retries=0
    )
    with pytest.raises(Exception, match=r"loras\[0\]"):
        ws.run("wavespeed-ai/qwen-image/edit-lora", {"prompt": "x", "image": OK, "loras": [{"path": "/etc/passwd"}]})
