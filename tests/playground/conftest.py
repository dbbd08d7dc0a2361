"""The Playground's browser and server, shared by the package's test modules (one of each)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.playground import MAX_BYTES
from tests.support.server import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

sync_api = pytest.importorskip("playwright.sync_api")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not Path(CHROMIUM).exists():
        skip = pytest.mark.skip(reason="Debian's chromium is not installed (.ci/run installs it)")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="package")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's LoRA folder with one small LoRA (the ``instant`` engine checks it, records it, applies
    none), written with numpy so that these tests need no torch."""
    import numpy as np
    from safetensors.numpy import save

    from qedit.loras.anatomy import lora_keys

    rank, width = 4, 16
    rng = np.random.default_rng(1)
    tensors = {}
    for target in ("attn.to_q", "attn.to_k"):
        down, up, _ = lora_keys(f"transformer_blocks.0.{target}", "peft")
        tensors[down] = rng.standard_normal((rank, width), dtype=np.float32)
        tensors[up] = rng.standard_normal((width, rank), dtype=np.float32)
    folder = tmp_path_factory.mktemp("loras")
    (folder / "style.safetensors").write_bytes(save(tensors))
    return folder


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory, lora_dir: Path) -> Iterator[Server]:
    env = {
        "QEDIT_INSTANT_STEP_DELAY": "0.05",
        "QEDIT_MAX_INPUT_BYTES": str(MAX_BYTES),
        "QEDIT_LORA_DIRS": str(lora_dir),
        "QEDIT_MODELS": "tiny",  # a second model a request may name, with no worker: its edits wait
    }
    srv = Server(tmp_path_factory.mktemp("playground"), env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        # offline: every host name but loopback fails to resolve (a CDN script would not load)
        offline = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", offline])
        yield b
        b.close()


def refused(text: str) -> bool:
    """Chromium logs every 4xx answer as a console error; a refusal the page then shows is no page error
    (nor is the 503 of a server that refuses edits for a model no worker serves, QEDIT_NO_WORKER=refuse)."""
    prefix = "Failed to load resource: the server responded with a status of "
    return text.startswith(prefix + "4") or text.startswith(prefix + "503")


@pytest.fixture
def page(browser: object, served: Server) -> Iterator[object]:
    """A fresh page; the test fails if the page logged an error or threw."""
    context = browser.new_context(locale="en-US", viewport={"width": 1200, "height": 900})  # type: ignore[attr-defined]
    pg = context.new_page()
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))  # type: ignore[attr-defined]
    pg.on("console", lambda m: m.type == "error" and not refused(m.text) and pg.errors.append(m.text))  # type: ignore[attr-defined]
    yield pg
    assert pg.errors == []  # type: ignore[attr-defined]
    context.close()
