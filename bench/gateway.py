"""The gateway's cost and its failover, on loopback with the instant engine.

    .venv/bin/python bench/gateway.py                 # 200 tasks, 16 clients
    .venv/bin/python bench/gateway.py --tasks 400 --clients 32 --poll 0.05

1. Throughput and latency, side by side: N tasks from C concurrent clients sent directly to a qedit
   server (``A``, W workers, zero step delay), then the same N through a gateway whose backends file
   lists ``A`` alone (cap W); tasks/s (first submit to last completion) and p50/p99 of each
   task's latency (submit until its client saw it completed); the ratio gateway/direct.
2. Failover: fresh ``A`` and ``B`` with a step delay, so tasks are in flight; a burst through the
   gateway, ``kill -9`` of ``A`` once it runs tasks; the time from the kill until the first task that
   was on ``A`` completes on ``B``, and until every task completed (each checked: completed once,
   served by a backend, a failed-over one's chain showing ``A`` then ``B``).

Every loop is bounded (``--timeout``); only loopback servers it starts itself are used.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
POLL = 0.02  # each client's poll of its task: the same for both paths


def _image() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 90, 200)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Proc:
    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.folder, self.env = folder, env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Proc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QEDIT_")}
        env.update(
            QEDIT_DATA_DIR=str(self.folder),
            QEDIT_MODEL="instant",
            QEDIT_AUTH="none",
            QEDIT_MIN_SIDE="16",
            QEDIT_MAX_CONCURRENT_TASKS="100000",
            QEDIT_RATE_LIMIT_RPM="1000000",
            **self.env,
        )
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "qedit.api.main:app_from_env", "--port", str(self.port)]
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([*cmd, "--log-level", "warning"], env=env, cwd=ROOT, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.url} not ready; see {self.folder / 'server.log'}")

    def cpu(self) -> float:
        """CPU seconds (user + system) the process has used so far (Linux /proc)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def backends_file(folder: Path, a: Proc, b: Proc | None, cap: int, poll: float | None) -> Path:
    def one(name: str, url: str, price: float) -> str:
        extra = f"poll_interval = {poll}\n" if poll else ""
        return (
            f'[[backend]]\nname = "{name}"\nkind = "qedit"\nurl = "{url}"\nmodels = ["*"]\n'
            f"price_per_image = {price}\nmax_concurrency = {cap}\nhealth_interval = 1\n{extra}\n"
        )

    f = folder / "backends.toml"
    f.write_text(one("A", a.url, 0.01) + (one("B", b.url, 0.02) if b else ""))
    return f


def burst(url: str, n: int, clients: int, timeout: float) -> dict:
    """N tasks from ``clients`` threads, each submitting then polling its task to the end."""
    image, lock = _image(), threading.Lock()
    latencies: list[float] = []
    ids: list[str] = []
    failures: list[str] = []
    todo = list(range(n))

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop()
                t0 = time.perf_counter()
                r = c.post("/v1/edits", json={"images": [image], "prompt": f"bench {i}", "seed": i})
                if r.status_code != 202:
                    with lock:
                        failures.append(f"submit {r.status_code}: {r.text[:100]}")
                    continue
                tid = r.json()["id"]
                deadline = time.monotonic() + timeout
                status = ""
                while time.monotonic() < deadline:
                    status = c.get(f"/v1/edits/{tid}").json()["status"]
                    if status in ("completed", "failed", "cancelled"):
                        break
                    time.sleep(POLL)
                with lock:
                    ids.append(tid)
                    if status == "completed":
                        latencies.append(time.perf_counter() - t0)
                    else:
                        failures.append(f"{tid}: {status}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "tasks": n,
        "completed": len(latencies),
        "failures": failures[:5],
        "tasks_per_s": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * _pct(latencies, 0.99) if latencies else float("nan"),
        "ids": ids,
    }


def throughput(tmp: Path, args: argparse.Namespace) -> None:
    env = {"QEDIT_WORKERS": str(args.workers), "QEDIT_INSTANT_STEP_DELAY": "0"}
    a = Proc(tmp / "a", env)
    a.folder.mkdir()
    a.start()
    (tmp / "gw").mkdir()
    f = backends_file(tmp / "gw", a, None, args.workers, args.poll)  # the gateway in front of A alone
    gw = Proc(tmp / "gw", {"QEDIT_WORKERS": "0", "QEDIT_BACKENDS_FILE": str(f)}).start()
    try:
        burst(a.url, min(20, args.tasks), args.clients, args.timeout)  # warm-up
        burst(gw.url, min(20, args.tasks), args.clients, args.timeout)
        cpu_a = a.cpu()
        direct = burst(a.url, args.tasks, args.clients, args.timeout)
        direct["cpu_ms"] = 1000 * (a.cpu() - cpu_a) / args.tasks
        cpu_a, cpu_gw = a.cpu(), gw.cpu()
        through = burst(gw.url, args.tasks, args.clients, args.timeout)
        through["cpu_ms"] = 1000 * (a.cpu() - cpu_a) / args.tasks
        through["gateway_cpu_ms"] = 1000 * (gw.cpu() - cpu_gw) / args.tasks
    finally:
        for p in (gw, a):
            p.stop()
    print(
        f"{args.tasks} tasks, {args.clients} clients, backend workers {args.workers}, gateway poll {args.poll or 0.2}s"
    )
    print(f"{'':10} {'tasks/s':>9} {'p50 ms':>9} {'p99 ms':>9}  completed")
    for name, r in (("direct", direct), ("gateway", through)):
        print(f"{name:10} {r['tasks_per_s']:9.1f} {r['p50_ms']:9.1f} {r['p99_ms']:9.1f}  {r['completed']}/{r['tasks']}")
        for f_ in r["failures"]:
            print("   ", f_)
    print(
        f"CPU per task: backend {direct['cpu_ms']:.1f} ms direct, {through['cpu_ms']:.1f} ms behind the gateway; "
        f"the gateway {through['gateway_cpu_ms']:.1f} ms"
    )
    print(
        f"{'ratio':10} {through['tasks_per_s'] / direct['tasks_per_s']:9.2f} "
        f"{through['p50_ms'] / direct['p50_ms']:9.2f} {through['p99_ms'] / direct['p99_ms']:9.2f}  (gateway / direct)"
    )


def failover(tmp: Path, args: argparse.Namespace) -> None:
    env = {"QEDIT_WORKERS": str(args.workers), "QEDIT_INSTANT_STEP_DELAY": str(args.step_delay)}
    a = Proc(tmp / "fa", env)
    b = Proc(tmp / "fb", env)
    for p in (a, b):
        p.folder.mkdir()
        p.start()
    (tmp / "fgw").mkdir()
    f = backends_file(tmp / "fgw", a, b, args.workers, args.poll)
    gw = Proc(tmp / "fgw", {"QEDIT_WORKERS": "0", "QEDIT_BACKENDS_FILE": str(f)}).start()
    n = args.failover_tasks
    try:
        with httpx.Client(base_url=gw.url, timeout=30) as c:
            ids = [c.post("/v1/edits", json={"images": [_image()], "prompt": f"f {i}"}).json()["id"] for i in range(n)]
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:  # A has tasks running
                if next(b_ for b_ in c.get("/v1/backends").json()["data"] if b_["name"] == "A")["in_flight"]:
                    break
                time.sleep(0.01)
            time.sleep(2 * args.step_delay)
            a.kill()
            killed = time.perf_counter()
            first: float | None = None
            views: dict[str, dict] = {}
            while time.monotonic() < deadline and len(views) < n:
                for tid in ids:
                    if tid in views:
                        continue
                    v = c.get(f"/v1/edits/{tid}").json()
                    if v["status"] in ("completed", "failed", "cancelled"):
                        views[tid] = v
                        chain = [x["backend"] for x in v["attempts"]]
                        if first is None and chain[:1] == ["A"] and v["backend"] == "B":
                            first = time.perf_counter() - killed
                time.sleep(0.005)
            done = time.perf_counter() - killed
    finally:
        for p in (gw, a, b):
            p.stop()
    completed = [v for v in views.values() if v["status"] == "completed"]
    moved = [v for v in completed if [x["backend"] for x in v["attempts"]] == ["A", "B"]]
    print(f"failover: {n} tasks, step delay {args.step_delay}s x 4 steps, kill -9 of A with {len(moved)} tasks on it")
    print(
        f"  completed {len(completed)}/{n}, each once; served by A {sum(v['backend'] == 'A' for v in completed)}, "
        f"by B {sum(v['backend'] == 'B' for v in completed)}"
    )
    print(f"  kill -> first failed-over task completed on B: {first if first is None else round(first, 3)} s")
    print(f"  kill -> all tasks completed: {done:.3f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=200)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--workers", type=int, default=4, help="worker threads of each backend (= its cap)")
    p.add_argument("--poll", type=float, default=None, help="the gateway's poll_interval (default the file's 0.2)")
    p.add_argument("--failover-tasks", type=int, default=24)
    p.add_argument("--step-delay", type=float, default=0.1, help="failover run: seconds per step of instant")
    p.add_argument("--timeout", type=float, default=120)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qedit-gw-bench-") as d:
        throughput(Path(d), args)
        failover(Path(d), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
