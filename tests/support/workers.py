"""``qedit worker`` in a subprocess for the scale-out tests: started with an API's environment,
stopped cleanly (SIGTERM) or killed (``kill -9``, as a GPU host that dies)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class WorkerProcess:
    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        qedit = Path(sys.executable).with_name("qedit")
        self.log = log
        with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [str(qedit), "worker", "--log-level", "warning", *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def tag(self) -> str:
        """What this process's worker names contain (``kind@host:PID:n``)."""
        return f":{self.proc.pid}:"

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]
