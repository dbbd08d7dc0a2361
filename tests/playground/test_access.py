"""The Playground without a mouse and with a screen reader: region boxes and mask rectangles from the
keyboard (announced), the before/after slider, where the focus goes, and axe-core's checks
(no serious or critical finding) on the page's main states."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.images import png_bytes
from tests.support.playground import edit, focused, open_with_key, pick, says, serious_violations, shot
from tests.support.server import Server


def announced(page: Any, text: str) -> str:
    return says(page, text, where="announce")


def test_boxes_and_a_mask_rectangle_from_the_keyboard(page: Any, served: Server, tmp_path: Path) -> None:
    open_with_key(page, served, served.create_key("keyboard"))
    pick(page, tmp_path, "photo.png", png_bytes((500, 400)))  # a step is 400 / 50 = 8 px
    page.wait_for_selector("#canvas-wrap:not([hidden])")
    page.focus("#mask-canvas")
    announced(page, "nothing selected: press Enter to add one")
    page.keyboard.press("Enter")  # the brush is the tool: Enter adds a mask rectangle, a quarter of each side
    assert announced(page, "Mask rectangle 1") == "Mask rectangle 1: x 188, y 150, 125 × 100 px"
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowDown")
    assert page.text_content("#announce") == "Mask rectangle 1: x 204, y 150, 125 × 108 px"
    assert page.get_attribute("#announce", "aria-live") == "polite"

    page.focus("[data-tool=box]")
    page.keyboard.press("Space")  # the region box tool, from the keyboard
    assert page.get_attribute("[data-tool=box]", "aria-pressed") == "true"
    page.focus("#mask-canvas")
    page.keyboard.press("Enter")
    announced(page, "Box 2 (red)")
    page.keyboard.press("Enter")
    announced(page, "Box 3 (red)")
    page.keyboard.press("Delete")
    announced(page, "Box 3 (red) removed")
    page.keyboard.press("PageDown")  # round to the first: the rectangle
    announced(page, "Mask rectangle 1: x 204")
    page.keyboard.press("Shift+ArrowLeft")
    announced(page, "117 × 108 px")
    field = page.locator("#regions li", has_text="Box 2").get_by_label("x · Box 2 (red)")
    field.fill("10")  # the same box as numbers: x, y, w, h
    field.press("Tab")
    announced(page, "Box 2 (red): x 10, y 170, 125 × 100 px")
    shot(page, "17-keyboard-boxes")

    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/edits")) as posted:
        edit(page, "frame the boxed part")
    body = posted.value.post_data_json
    assert body["boxes"] == [{"x0": 10, "y0": 170, "x1": 135, "y1": 270, "colour": "red"}]
    assert body["mask"].startswith("data:image/png;base64,")  # the rectangle, as the mask
    page.wait_for_selector("#result:not([hidden])", timeout=20_000)


def test_focus_slider_and_no_serious_axe_findings(page: Any, served: Server, tmp_path: Path) -> None:
    open_with_key(page, served, served.create_key("access"))
    assert page.locator("header").count() == 1 and page.locator("main").count() == 1
    assert page.get_attribute("nav", "aria-label") and page.get_attribute("#message", "role") == "alert"
    assert page.get_attribute("#counters", "role") == "status"
    assert serious_violations(page) == []  # the empty page

    page.click("#submit")
    says(page, "add an image first")
    assert focused(page) == "drop"  # where it is fixed
    pick(page, tmp_path, "photo.png", png_bytes((480, 400)))
    page.wait_for_selector("#canvas-wrap:not([hidden])")
    page.click("#submit")
    says(page, "write an instruction first")
    assert focused(page) == "prompt"
    page.click("details summary")
    page.click("#add-lora")
    page.click("#add-rect")
    assert serious_violations(page) == []  # an image, its tools, the options and a LoRA row

    page.fill("[aria-label='LoRA 1: name or URL']", "")
    page.fill("#steps", "20")
    edit(page, "make it blue")
    page.wait_for_function("document.getElementById('step').textContent.startsWith('step ')", polling=50)
    assert focused(page) == "cancel"  # the one thing to do while it runs
    page.wait_for_selector("#result:not([hidden])", timeout=20_000)
    assert focused(page) == "result-title"
    assert page.text_content("#announce") == "done"
    assert serious_violations(page) == []  # the result

    slider = page.locator("#slider")
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert slider.input_value() == "52" and slider.get_attribute("aria-valuetext") == "52% after"
    assert page.evaluate("document.getElementById('after-wrap').style.width") == "52%"
    assert page.evaluate("getComputedStyle(document.getElementById('slider')).display") != "none"
    page.keyboard.press("End")
    assert page.evaluate("document.getElementById('after-wrap').style.width") == "100%"
    shot(page, "18-result-keyboard")

    edit(page, "[fail] on purpose")
    says(page, "failed: ")
    assert focused(page) == "message"
    assert serious_violations(page) == []  # an error

    page.select_option("#lang", "zh")
    assert page.get_attribute("#mask-canvas", "aria-label") == "被编辑图片上的蒙版与区域框"
    assert json.loads(page.evaluate("JSON.stringify(document.documentElement.lang)")) == "zh-CN"
    assert serious_violations(page) == []  # in Chinese
