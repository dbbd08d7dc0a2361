"""The model picker: filled from ``GET /v1/models`` with the page's key, each model with its live
workers; the chosen model is what the request names and what the task runs on, its image limit is
the page's, and the choice is kept across reloads. The package's server serves ``instant`` with
embedded workers and names ``tiny`` (QEDIT_MODELS) that no worker serves."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.images import png_bytes
from tests.support.playground import edit, focused, open_with_key, pick, ready, says, serious_violations, shot
from tests.support.server import Server


def served_models(served: Server, key: str) -> dict[str, dict]:
    r = httpx.get(f"{served.url}/v1/models", headers={"authorization": f"Bearer {key}"})
    r.raise_for_status()
    return {m["id"]: m for m in r.json()["data"]}


def options(page: Any) -> dict[str, str]:
    return page.evaluate(
        "Object.fromEntries([...document.getElementById('model-pick').options].map(o => [o.value, o.text]))"
    )


def test_the_picker_lists_the_models_sends_the_choice_and_follows_its_limit(
    page: Any, served: Server, tmp_path: Path
) -> None:
    key = served.create_key("models")
    headers = {"authorization": f"Bearer {key}"}
    models = served_models(served, key)
    workers = models["instant"]["workers"]
    assert workers >= 1 and models["tiny"]["workers"] == 0  # what the page must show
    open_with_key(page, served, key)
    page.wait_for_function("document.getElementById('model-pick').options.length == 2")
    assert options(page) == {
        "instant": f"instant (default) — {workers} worker{'s' if workers > 1 else ''}",
        "tiny": "tiny — no worker: waits",
    }
    assert page.input_value("#model-pick") == "instant"  # the server's default
    assert page.get_by_label("Model").evaluate("e => e.id") == "model-pick"  # labelled
    assert "at most 3" in page.text_content("#limits")
    shot(page, "20-model-picker")

    page.focus("#model-pick")
    page.keyboard.press("ArrowDown")  # chosen from the keyboard
    assert page.input_value("#model-pick") == "tiny" and focused(page) == "model-pick"
    status = page.text_content("#model-status")
    assert status == "No worker serves tiny now: an edit waits in the queue until one starts. Up to 1 image an edit."
    assert "at most 1" in page.text_content("#limits")  # tiny takes one image
    assert page.text_content("#drop-text") == "Drop an image here, paste, or choose a file"
    pick(page, tmp_path, "photo.png", png_bytes((480, 400)))
    page.wait_for_selector("#thumbs img")
    pick(page, tmp_path, "other.png", png_bytes((400, 400)))
    says(page, "at most 1 image")
    assert page.locator("#thumbs img").count() == 1

    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/edits")) as posted:
        edit(page, "wait for a tiny worker")
    assert posted.value.post_data_json["model"] == "tiny"
    page.wait_for_selector("#progress:not([hidden])")
    (made,) = httpx.get(f"{served.url}/v1/edits", headers=headers).json()["data"]
    task = httpx.get(f"{served.url}/v1/edits/{made['id']}", headers=headers).json()
    assert task["model"] == "tiny" and task["status"] == "created"  # waiting for a worker of its model
    shot(page, "21-model-waits")
    page.click("#cancel")
    says(page, "cancelled")

    ready(page, served.url + "/")  # a reload keeps the choice
    page.wait_for_function("document.getElementById('model-pick').options.length == 2")
    assert page.input_value("#model-pick") == "tiny"
    page.select_option("#model-pick", "instant")
    assert "at most 3" in page.text_content("#limits")
    pick(page, tmp_path, "ref.png", png_bytes((400, 400), colour=(200, 40, 40)))
    pick(page, tmp_path, "photo.png", png_bytes((480, 400)))
    page.wait_for_function("document.querySelectorAll('#thumbs img').length == 2")
    page.select_option("#model-pick", "tiny")  # two images are one too many for tiny: said, and not sent
    says(page, "tiny takes at most 1 image: remove 1")
    page.fill("#prompt", "two images")
    page.click("#submit")
    assert focused(page) == "drop"
    page.select_option("#model-pick", "instant")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/edits")) as posted:
        page.click("#submit")
    assert posted.value.post_data_json["model"] == "instant"
    page.wait_for_selector("#result:not([hidden])", timeout=20_000)
    shown = json.loads(page.text_content("#params"))
    assert shown["model"] == "instant"
    assert httpx.get(f"{served.url}/v1/edits/{shown['id']}", headers=headers).json()["model"] == "instant"
    page.click("#copy")
    assert '"model":"instant"' in page.text_content("#params")
    page.click("#copy-python")
    assert '\\"model\\":\\"instant\\"' in page.text_content("#params")
    assert serious_violations(page) == []

    page.select_option("#lang", "zh")
    assert page.text_content("label[for=model-pick]") == "模型"
    assert options(page)["tiny"] == "tiny — 无工作进程：排队等待"
    assert f"{workers} 个工作进程" in page.text_content("#model-status")
    assert serious_violations(page) == []
    shot(page, "22-model-zh")


@pytest.fixture
def refusing(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "refusing", {"QEDIT_MODELS": "tiny", "QEDIT_NO_WORKER": "refuse"}).start()
    yield srv
    srv.stop()


def test_a_server_that_refuses_says_so_in_the_picker_and_the_refusal_is_its_own(
    page: Any, refusing: Server, tmp_path: Path
) -> None:
    key = refusing.create_key("refused")
    open_with_key(page, refusing, key)
    page.wait_for_function("document.getElementById('model-pick').options.length == 2")
    assert options(page)["tiny"] == "tiny — no worker: refused"
    page.select_option("#model-pick", "tiny")
    assert "the server refuses edits for it" in page.text_content("#model-status")
    pick(page, tmp_path, "photo.png", png_bytes((480, 400)))
    page.wait_for_selector("#thumbs img")
    edit(page, "no one to run this")
    said = says(page, "no worker serves model tiny")
    r = httpx.post(
        f"{refusing.url}/v1/edits",
        headers={"authorization": f"Bearer {key}"},
        json={"prompt": "x", "images": ["task://none/0"], "model": "tiny"},
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_worker"
    assert said == r.json()["error"]["message"]  # as the server says it
    assert focused(page) == "message"
    shot(page, "23-model-refused")
