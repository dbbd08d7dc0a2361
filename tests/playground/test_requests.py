"""What the page sends and what it hands back: LoRAs and fast mode, and the curl/Python snippets,
which are run here as a person would run them (the inputs saved from the page's links) and must
give a task that completes with the same parameters."""

from __future__ import annotations

import ast
import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.images import png_bytes
from tests.support.playground import edit, focused, open_with_key, pick, ready, says, shot
from tests.support.server import Server, wait_status


def save_inputs(page: Any, served: Server, where: Path) -> list[str]:
    """Save each input the snippet names from the page's download links; the names."""
    names = []
    for link in page.locator("#input-links a").all():
        name, href = link.get_attribute("download"), link.get_attribute("href")
        if href.startswith("data:"):
            data = base64.b64decode(href.split(",", 1)[1])
        else:
            data = httpx.get(href if href.startswith("http") else served.url + href).content
        (where / name).write_bytes(data)
        names.append(name)
    return names


def run_snippet(kind: str, text: str, key: str, where: Path) -> dict:
    """Run a curl (bash) or Python snippet in ``where`` with ``QEDIT_KEY`` set; the JSON it printed."""
    env = {**os.environ, "QEDIT_KEY": key}
    cmd = ["bash", "-c", text] if kind == "curl" else [sys.executable, "-c", text]
    done = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if kind == "curl" else ast.literal_eval(done.stdout.strip())


def same_request(a: dict, b: dict) -> None:
    for field in ("prompt", "seed", "num_inference_steps", "true_cfg_scale", "fast", "loras", "boxes", "num_images"):
        assert a["params"][field] == b["params"][field], field


def test_loras_and_fast_are_sent_shown_and_refused_as_the_server_says(
    page: Any, served: Server, tmp_path: Path
) -> None:
    key = served.create_key("loras")
    open_with_key(page, served, key)
    pick(page, tmp_path, "photo.png", png_bytes((480, 400)))
    page.wait_for_selector("#thumbs img")
    page.click("details summary")
    assert "files in the server's LoRA folder" in page.text_content("#lora-help")
    page.click("#add-lora")
    assert page.evaluate("document.activeElement.className") == "lora-path"  # focus on the new field
    page.keyboard.type("style.safetensors")
    page.fill("[aria-label='scale of LoRA 1']", "0.5")
    page.click("#add-lora")
    page.keyboard.type("nope.safetensors")
    edit(page, "in the style")
    refusal = says(page, "nope.safetensors")
    assert refusal.startswith("loras[1]") and "no LoRA file nope.safetensors" in refusal  # the server's words
    assert focused(page) == "message"
    shot(page, "14-lora-refused")

    page.click("[aria-label='Remove nope.safetensors']")
    page.fill("#steps", "30")
    page.select_option("#fast", "4")  # fast sets steps and CFG itself: the fields are off, nothing conflicts
    assert page.is_disabled("#steps") and page.input_value("#steps") == ""
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/edits")) as posted:
        page.click("#submit")
    body = posted.value.post_data_json
    assert body["loras"] == [{"path": "style.safetensors", "scale": 0.5}] and body["fast"] == 4
    assert "num_inference_steps" not in body
    page.wait_for_selector("#result:not([hidden])", timeout=20_000)
    shown = json.loads(page.text_content("#params"))
    assert shown["loras"] == [{"path": "style.safetensors", "scale": 0.5}] and shown["fast"] == 4
    task = httpx.get(f"{served.url}/v1/edits/{shown['id']}", headers={"authorization": f"Bearer {key}"}).json()
    (ran,) = json.loads(task["outputs"][0]["metadata"]["loras"])  # the worker resolved it and recorded it
    assert ran["name"] == "style" and ran["scale"] == 0.5 and len(ran["sha256"]) == 64
    page.click("#copy")
    assert '"loras":[{"path":"style.safetensors","scale":0.5}]' in page.text_content("#params")
    shot(page, "15-lora-result")


def test_the_snippets_reproduce_an_upload_with_a_mask_and_a_chained_edit(
    page: Any, served: Server, tmp_path: Path
) -> None:
    key = served.create_key("snippets")
    headers = {"authorization": f"Bearer {key}"}
    open_with_key(page, served, key)
    pick(page, tmp_path, "ref.png", png_bytes((400, 400), colour=(200, 40, 40)))
    pick(page, tmp_path, "photo.png", png_bytes((480, 400)))
    page.wait_for_selector("#canvas-wrap:not([hidden])")
    page.click("#add-rect")  # a mask rectangle and a blue box, from the buttons
    page.select_option("#box-colour", "blue")
    page.click("#add-box")
    page.click("details summary")
    page.fill("#steps", "3")
    page.fill("#seed", "1234")
    page.select_option("#format", "webp")
    edit(page, "swap the 'red' corner for blue")  # a quote the shell must survive
    page.wait_for_selector("#result:not([hidden])", timeout=20_000)
    made = httpx.get(f"{served.url}/v1/edits", headers=headers).json()["data"][0]

    page.click("#copy")
    curl = page.text_content("#params")
    assert "/v1/edits/upload" in curl and "-F image=@input-1.png" in curl and "-F mask=@mask.png" in curl
    shot(page, "16-curl")
    work = tmp_path / "curl"
    work.mkdir()
    assert save_inputs(page, served, work) == ["input-1.png", "input-2.png", "mask.png"]
    task = run_snippet("curl", curl, key, work)
    done = wait_status(served.client(key), task["id"])
    assert done["status"] == "completed", done
    same_request(done, made)
    assert done["outputs"][0]["format"] == "webp" and [i["width"] for i in done["inputs"]] == [400, 480]

    page.click("#copy-python")
    python = page.text_content("#params")
    task = run_snippet("python", python, key, work)
    done = wait_status(served.client(key), task["id"])
    assert done["status"] == "completed", done
    same_request(done, made)

    page.click("#chain")  # the next step starts from task://: the snippet stays JSON, no file to save
    edit(page, "now add a moon")
    page.wait_for_function("document.querySelectorAll('#chain-steps li').length == 2", timeout=20_000)
    chained = httpx.get(f"{served.url}/v1/edits", headers=headers).json()["data"][0]
    page.click("#copy")
    curl = page.text_content("#params")
    assert f"task://{made['id']}/0" in curl and page.is_hidden("#snippet-inputs")
    task = run_snippet("curl", curl, key, tmp_path)
    done = wait_status(served.client(key), task["id"])
    assert done["status"] == "completed" and done["parent_id"] == made["id"]
    same_request(done, chained)

    ready(page, served.url + "/")  # after a reload the page has only the server's record: still runnable
    page.locator("#history-list button", has_text="Reopen").first.click()
    page.click("#copy")
    curl = page.text_content("#params")
    task = run_snippet("curl", curl, key, tmp_path)
    done = wait_status(served.client(key), task["id"])
    assert done["status"] == "completed" and done["parent_id"] == made["id"]
    same_request(done, chained)
    page.locator("#history-list li", has_text="swap the").last.locator("button").click()
    page.click("#copy")  # an upload reopened after a reload: the command names the files, the page has none
    assert "-F image=@input-2.png" in page.text_content("#params") and page.locator("#input-links a").count() == 0
    assert "no longer has them" in page.text_content("#snippet-note")
