"""Driving the Playground in a browser: open it with a key, pick or drop files, read its messages.

Plain functions over a Playwright sync ``Page`` (tests/playground); the page says it is wired with
``body[data-ready]``, so nothing here races its start-up.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from tests.support.server import Server

ARTIFACTS = Path(__file__).resolve().parents[1] / "playground" / "artifacts"
SERIOUS = ("serious", "critical")
MAX_BYTES = 300_000  # the test server's per-image limit, so that an oversize file stays small


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def ready(page: Any, url: str) -> None:
    """Open ``url`` and wait until the page has read the server's config and wired its controls."""
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")


def open_with_key(page: Any, served: Server, key: str) -> None:
    ready(page, served.url + "/")
    page.fill("#key", key)
    page.dispatch_event("#key", "change")


def pick(page: Any, tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    page.set_input_files("#files", str(path))


def drop(page: Any, name: str, data: bytes) -> None:
    page.evaluate(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "image/png" }));
            document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true }));
        }""",
        [name, base64.b64encode(data).decode()],
    )


def says(page: Any, text: str, where: str = "message") -> str:
    """Wait until the element ``where`` (the page's message) contains ``text``; its text."""
    page.wait_for_function(
        "([id, t]) => document.getElementById(id).textContent.includes(t)", arg=[where, text], timeout=5_000
    )
    return page.text_content(f"#{where}")


def edit(page: Any, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.click("#submit")


def focused(page: Any) -> str:
    """The id of the element that has the keyboard focus."""
    return page.evaluate("document.activeElement?.id || document.activeElement?.tagName")


def serious_violations(page: Any) -> list[str]:
    """axe-core's serious and critical findings on the page as it is now, one line each."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in SERIOUS
    ]
