"""A real qedit server for tests: uvicorn on loopback in a subprocess, settings by environment.

Used by tests/api, tests/service and tests/cli. ``Server.kill()`` is a real ``kill -9``; ``restart()``
starts a new process on the same data dir and database, as an operator would after a crash.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]  # the repository


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``uvicorn --factory qedit.api.main:app_from_env`` process."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_url(self) -> str:
        return self.extra_env.get("QEDIT_DATABASE_URL") or f"sqlite:///{self.data_dir / 'qedit.db'}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QEDIT_") or k == "QEDIT_CACHE"}
        env.update(
            {
                "QEDIT_DATA_DIR": str(self.data_dir),
                "QEDIT_MODEL": "instant",
                "QEDIT_SWEEP_INTERVAL": "0.5",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60.0, wait_ready: bool = True) -> Server:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "qedit.api.main:app_from_env",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
        ]
        self.proc = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + timeout
        path = "/readyz" if wait_ready else "/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + path, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """``kill -9``: no shutdown handlers, no flushing, like a power cut for the process."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> Server:
        self.stop()
        return self.start()

    def client(self, key: str | None = None, timeout: float = 30.0) -> httpx.Client:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def create_key(self, name: str = "test", **limits: int) -> str:
        from qedit.service.database import Database
        from qedit.service.keys import KeyStore

        db = Database(self.db_url)
        try:
            db.create_schema()
            return KeyStore(db).create(name, **limits)[1]
        finally:
            db.close()


def wait_status(
    client: httpx.Client,
    task_id: str,
    statuses: tuple[str, ...] = ("completed", "failed", "cancelled"),
    timeout: float = 20.0,
    path: str = "/v1/edits/{id}",
) -> dict:
    """Poll until the task reaches one of ``statuses``; the last view otherwise (the test then fails on it)."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        r = client.get(path.format(id=task_id))
        body = r.json()
        status = body.get("status") or body.get("data", {}).get("status")
        if status in statuses:
            return body
        time.sleep(0.05)
    return body
