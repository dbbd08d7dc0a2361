"""``qedit serve``: starts the API on loopback, needs keys unless --no-auth, stops cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.images import b64, png_bytes
from tests.support.server import free_port


def _serve(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    qedit = Path(sys.executable).with_name("qedit")
    proc = subprocess.Popen(
        [
            str(qedit),
            "serve",
            "--port",
            str(port),
            "--model",
            "instant",
            "--data-dir",
            str(tmp_path),
            "--log-level",
            "warning",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(proc.communicate()[0].decode())


def test_local_mode_serves_edits_without_keys(tmp_path: Path) -> None:
    proc, url = _serve(tmp_path, "--no-auth")
    try:
        r = httpx.post(url + "/v1/edits", json={"prompt": "x", "images": [b64(png_bytes())], "sync": True})
        assert r.status_code == 200 and r.json()["status"] == "completed"
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) in (0, -15)  # uvicorn shuts down, then re-raises SIGTERM
    assert (tmp_path / "qedit.db").exists() and (tmp_path / "secret").exists()


def test_keys_are_required_by_default(tmp_path: Path) -> None:
    proc, url = _serve(tmp_path)
    try:
        r = httpx.post(url + "/v1/edits", json={"prompt": "x", "images": [b64(png_bytes())]})
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_engine_and_batching_flags_reach_readyz(tmp_path: Path) -> None:
    proc, url = _serve(tmp_path, "--no-auth", "--cache", "dbcache", "--cfg-batch", "off", "--batch-size", "4")
    try:
        engine = httpx.get(url + "/readyz").json()["engine"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert engine["options"]["cache"] == "dbcache" and engine["options"]["cfg_batch"] == "off"
    assert (engine["batch_size"], engine["batch_wait"]) == (4, 0.05)


def test_model_flags_reach_the_models_a_request_may_name(tmp_path: Path) -> None:
    proc, url = _serve(tmp_path, "--no-auth", "--also-model", "tiny", "--no-worker", "refuse")
    try:
        models = {m["id"]: m["workers"] for m in httpx.get(url + "/v1/models").json()["data"]}
        body = {"prompt": "x", "images": [b64(png_bytes())], "model": "tiny"}
        refused = httpx.post(url + "/v1/edits", json=body)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert models == {"instant": 1, "tiny": 0}
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "no_worker", refused.text


def test_a_bad_engine_variable_stops_serve_with_one_line_naming_it(tmp_path: Path) -> None:
    qedit = Path(sys.executable).with_name("qedit")
    env = {**os.environ, "QEDIT_QUANTIZE": "int4"}
    out = subprocess.run(
        [str(qedit), "serve", "--model", "instant", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("qedit serve: error: QEDIT_QUANTIZE") and "'int4'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
