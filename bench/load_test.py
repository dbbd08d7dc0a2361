"""Load test of the task service on loopback: N submissions from C concurrent clients, instant engine.

    .venv/bin/python bench/load_test.py                      # 300 submissions, 30 clients, own server
    .venv/bin/python bench/load_test.py --url http://127.0.0.1:8000 --key qk_...   # an existing server

Checks that no task is lost or duplicated (every accepted id completes exactly once, attempt 1, and
the store holds exactly the submitted tasks), and reports submit latency p50/p99 and the tasks/s the
queue sustains from first submission to last completion. Only 127.0.0.1 is accepted as a target,
and every loop is bounded (a stuck run gives up after --timeout seconds).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _image() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (384, 384), (40, 90, 200)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def start_server(data_dir: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("QEDIT_")}
    env.update(
        {
            "QEDIT_MODEL": "instant",
            "QEDIT_AUTH": "none",
            "QEDIT_DATA_DIR": str(data_dir),
            "QEDIT_WORKERS": str(workers),
            "QEDIT_INSTANT_STEP_DELAY": "0",
        }
    )
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "qedit.api.main:app_from_env",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not become ready")


def run(url: str, key: str | None, submissions: int, concurrency: int, timeout: float) -> dict:
    if urlparse(url).hostname != "127.0.0.1":
        raise SystemExit("the load test targets 127.0.0.1 only")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"prompt": "load test", "images": [_image()], "num_inference_steps": 2}
    latencies: list[float] = []
    accepted: list[str] = []
    refused: list[int] = []
    lock = threading.Lock()
    counter = iter(range(submissions))

    def client() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                r = c.post("/v1/edits", json={**body, "seed": i})
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    if r.status_code == 202:
                        accepted.append(r.json()["id"])
                    else:
                        refused.append(r.status_code)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    submit_seconds = time.perf_counter() - start

    # wait for the queue to drain (bounded), reading the history newest first
    pending = set(accepted)
    finished: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
        while pending and time.monotonic() < deadline:
            for tid in list(pending)[:200]:
                task = c.get(f"/v1/edits/{tid}").json()
                if task["status"] in ("completed", "failed", "cancelled"):
                    finished[tid] = task
                    pending.discard(tid)
            if pending:
                time.sleep(0.05)
        last_finish = max((t["finished_at"] for t in finished.values()), default=None)
        listed: list[str] = []
        cursor = None
        for _ in range(submissions // 100 + 10):  # bounded pagination
            page = c.get("/v1/edits", params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
            listed += [t["id"] for t in page["data"]]
            cursor = page["next_cursor"]
            if not page["has_more"]:
                break
    elapsed = time.perf_counter() - start
    completed = [t for t in finished.values() if t["status"] == "completed"]
    import datetime as dt

    first = min(dt.datetime.fromisoformat(t["created_at"].replace("Z", "+00:00")) for t in finished.values())
    last = dt.datetime.fromisoformat(last_finish.replace("Z", "+00:00")) if last_finish else first
    queue_seconds = max((last - first).total_seconds(), 1e-9)
    reran = sum(1 for t in completed if t["attempt"] != 1 or len(t["outputs"]) != 1)
    duplicated = len(listed) - len(set(listed)) + reran
    report = {
        "submissions": submissions,
        "concurrency": concurrency,
        "accepted": len(accepted),
        "refused": len(refused),
        "completed": len(completed),
        "lost": len(set(accepted) - {t["id"] for t in completed}),
        "duplicated": duplicated,
        "unexpected_in_store": len(set(listed) - set(accepted)),
        "submit_p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "submit_p99_ms": round(_percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "submit_seconds": round(submit_seconds, 2),
        "tasks_per_second": round(len(completed) / queue_seconds, 1),
        "wall_seconds": round(elapsed, 2),
    }
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an existing server on 127.0.0.1 (default: start one with the instant engine)")
    p.add_argument("--key", help="API key for --url")
    p.add_argument("--submissions", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=30)
    p.add_argument("--workers", type=int, default=2, help="worker threads of the started server")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    args = p.parse_args(argv)
    if args.workers < 1 or args.submissions < 1 or args.concurrency < 1:
        p.error("--workers, --submissions and --concurrency must be at least 1")
    proc = None
    with tempfile.TemporaryDirectory(prefix="qedit-load-") as tmp:
        url = args.url
        if url is None:
            proc, url = start_server(Path(tmp), args.workers)
        try:
            report = run(url, args.key, args.submissions, args.concurrency, args.timeout)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            print(f"{k:22} {v}")
    ok = report["lost"] == 0 and report["duplicated"] == 0 and report["unexpected_in_store"] == 0
    ok = ok and report["completed"] == args.submissions
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
