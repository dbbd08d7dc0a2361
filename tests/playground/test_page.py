"""The Playground in a real browser: Debian's headless Chromium driven by Playwright's Python API,
against a real ``qedit serve`` process (the ``instant`` engine, so each flow takes seconds).

Screenshots of each state go to ``tests/playground/artifacts/`` (git-ignored) to be looked at.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import png_bytes
from tests.support.playground import ARTIFACTS, MAX_BYTES, drop, edit, open_with_key, pick, ready, says, shot
from tests.support.server import Server


def test_upload_edit_watch_progress_chain_and_history(page: object, served: Server, tmp_path: Path) -> None:
    key = served.create_key("playground")
    open_with_key(page, served, key)
    shot(page, "01-empty")
    pick(page, tmp_path, "photo.png", png_bytes((480, 400)))
    page.wait_for_selector("#thumbs img")  # type: ignore[attr-defined]
    assert page.locator("#thumbs img").count() == 1  # type: ignore[attr-defined]
    page.click("details summary")  # type: ignore[attr-defined]  # the options
    page.fill("#steps", "40")  # type: ignore[attr-defined]
    edit(page, "make the sky purple")
    page.wait_for_function("document.getElementById('step').textContent.startsWith('step ')", polling=50)  # type: ignore[attr-defined]
    assert "/40" in page.text_content("#step")  # type: ignore[attr-defined]  # live progress from the event stream
    shot(page, "02-progress")
    page.wait_for_selector("#result:not([hidden])", timeout=20_000)  # type: ignore[attr-defined]
    assert "/v1/files/" in page.get_attribute("#after", "src")  # type: ignore[attr-defined]
    shot(page, "03-result")
    first = httpx.get(f"{served.url}/v1/edits", headers={"authorization": f"Bearer {key}"}).json()["data"][0]

    page.click("#chain")  # type: ignore[attr-defined]
    page.wait_for_selector("#thumbs img")  # type: ignore[attr-defined]
    assert page.locator("#thumbs img").count() == 1  # type: ignore[attr-defined]
    edit(page, "now add a moon")
    page.wait_for_function("document.querySelectorAll('#chain-steps li').length == 2", timeout=20_000)  # type: ignore[attr-defined]
    shot(page, "04-chained")
    tasks = httpx.get(f"{served.url}/v1/edits", headers={"authorization": f"Bearer {key}"}).json()["data"]
    assert tasks[0]["parent_id"] == first["id"] and tasks[0]["inputs"][0]["source"] == f"task://{first['id']}/0"

    ready(page, served.url + "/")  # a reload
    page.wait_for_selector("#counters:has-text('completed')")  # type: ignore[attr-defined]
    assert page.text_content("#counters") == "0 running · 2 completed"  # type: ignore[attr-defined]
    assert page.locator("#history-list li").count() == 2  # type: ignore[attr-defined]
    shot(page, "05-history")


def test_files_are_checked_in_the_page_before_anything_is_sent(page: object, served: Server, tmp_path: Path) -> None:
    key = served.create_key("checks")
    open_with_key(page, served, key)
    sent: list[str] = []
    page.on("request", lambda r: r.method == "POST" and sent.append(r.url))  # type: ignore[attr-defined]
    pick(page, tmp_path, "tiny.png", png_bytes((100, 100)))
    assert "each side must be 384-3072 px" in says(page, "100x100 px")
    big = png_bytes((1200, 1200), mode="RGB")
    big += b"\0" * (MAX_BYTES + 1 - len(big)) if len(big) <= MAX_BYTES else b""
    pick(page, tmp_path, "big.png", big)
    assert "MB allowed" in says(page, "big.png")
    pick(page, tmp_path, "notes.txt", b"hello")
    says(page, "notes.txt: not a supported image")
    shot(page, "06-refused")
    page.click("#submit")  # type: ignore[attr-defined]
    says(page, "add an image first")
    assert sent == []


def test_drop_paint_a_mask_and_cancel(page: object, served: Server) -> None:
    key = served.create_key("mask")
    open_with_key(page, served, key)
    drop(page, "dropped.png", png_bytes((480, 400)))
    page.wait_for_selector("#canvas-wrap:not([hidden])")  # type: ignore[attr-defined]
    page.locator("#mask-canvas").scroll_into_view_if_needed()  # type: ignore[attr-defined]  # the mouse paints where it sees
    box = page.locator("#mask-canvas").bounding_box()  # type: ignore[attr-defined]
    page.mouse.move(box["x"] + 20, box["y"] + 20)  # type: ignore[attr-defined]
    page.mouse.down()  # type: ignore[attr-defined]
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=5)  # type: ignore[attr-defined]
    page.mouse.up()  # type: ignore[attr-defined]
    page.click("[data-tool=box]")  # type: ignore[attr-defined]  # a region box, in blue
    page.select_option("#box-colour", "blue")  # type: ignore[attr-defined]
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6)  # type: ignore[attr-defined]
    page.mouse.down()  # type: ignore[attr-defined]
    page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.9, steps=4)  # type: ignore[attr-defined]
    page.mouse.up()  # type: ignore[attr-defined]
    shot(page, "07-mask")
    page.click("details summary")  # type: ignore[attr-defined]
    page.fill("#steps", "100")  # type: ignore[attr-defined]
    page.fill("#count", "4")  # type: ignore[attr-defined]  # 4 x 100 steps: 20 s, time to cancel
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/edits")) as posted:  # type: ignore[attr-defined]
        edit(page, "remove the painted thing")
    body = posted.value.post_data_json
    assert body["mask"].startswith("data:image/png;base64,") and body["num_inference_steps"] == 100
    (region,) = body["boxes"]
    assert region["colour"] == "blue" and 280 <= region["x0"] < region["x1"] <= 480 and region["y1"] <= 400
    page.wait_for_function("document.getElementById('step').textContent.startsWith('step ')", polling=50)  # type: ignore[attr-defined]
    page.click("#cancel")  # type: ignore[attr-defined]
    page.wait_for_selector("#message:has-text('cancelled')", timeout=10_000)  # type: ignore[attr-defined]
    shot(page, "08-cancelled")


def test_language_switch_and_default_from_the_browser(browser: object, served: Server) -> None:
    context = browser.new_context(locale="zh-CN")  # type: ignore[attr-defined]
    pg = context.new_page()
    ready(pg, served.url + "/playground")
    assert pg.text_content("h1") == "qedit 在线试用"
    pg.select_option("#lang", "en")
    assert pg.text_content("h1") == "qedit Playground"
    pg.screenshot(path=str(ARTIFACTS / "09-language.png"))
    context.close()


def test_docs_render_offline(page: object, served: Server) -> None:
    page.goto(served.url + "/docs")  # type: ignore[attr-defined]
    page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)  # type: ignore[attr-defined]
    assert "qedit" in page.text_content(".swagger-ui .info .title")  # type: ignore[attr-defined]
    shot(page, "10-docs")


COUNT_PICKS = (  # count the file picker's openings instead of opening it
    "() => { window.picked = 0; const files = document.getElementById('files');"
    " files.onclick = (e) => { window.picked++; e.preventDefault(); }; }"
)


def test_phone_width_and_keyboard(browser: object, served: Server) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, locale="en-US")  # type: ignore[attr-defined]
    pg = context.new_page()
    ready(pg, served.url + "/")
    assert pg.evaluate("document.scrollingElement.scrollWidth") <= 390  # nothing wider than the phone
    pg.evaluate(COUNT_PICKS)
    pg.focus("#drop")
    pg.keyboard.press("Enter")  # the drop zone opens the file picker from the keyboard
    pg.keyboard.press(" ")
    assert pg.evaluate("window.picked") == 2
    pg.screenshot(path=str(ARTIFACTS / "11-phone.png"), full_page=True)
    context.close()


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("tiny"), {"QEDIT_MODEL": "tiny"}).start(timeout=180)
    yield srv
    srv.stop()


def test_an_edit_on_the_tiny_preset(page: object, tiny_server: Server, tmp_path: Path) -> None:
    """The real engine behind the page: the tiny preset's snapshot, loaded by the same code as real weights."""
    open_with_key(page, tiny_server, tiny_server.create_key())
    pick(page, tmp_path, "photo.png", png_bytes((480, 400)))
    page.wait_for_selector("#thumbs img")  # type: ignore[attr-defined]
    page.click("details summary")  # type: ignore[attr-defined]
    page.fill("#steps", "2")  # type: ignore[attr-defined]
    edit(page, "把天空变成紫色")
    page.wait_for_selector("#result:not([hidden])", timeout=120_000)  # type: ignore[attr-defined]
    assert '"num_inference_steps": 2' in page.text_content("#params")  # type: ignore[attr-defined]
    shot(page, "12-tiny")


def test_a_failed_edit_shows_the_servers_reason(page: object, served: Server, tmp_path: Path) -> None:
    open_with_key(page, served, served.create_key("fails"))
    pick(page, tmp_path, "photo.png", png_bytes((480, 400)))
    page.wait_for_selector("#thumbs img")  # type: ignore[attr-defined]
    edit(page, "[fail] this one")  # the instant engine fails an edit whose prompt says so
    reason = says(page, "failed: ")
    page.wait_for_selector("#history-list .status-failed")  # type: ignore[attr-defined]
    shown = page.text_content("#history-list .status-failed")  # type: ignore[attr-defined]
    assert reason.removeprefix("failed: ") in shown and len(reason) > len("failed: ")
    shot(page, "13-failed")
