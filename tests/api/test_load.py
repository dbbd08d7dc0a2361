"""A fast run of bench/load_test.py: many concurrent clients, no task lost or duplicated."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.server import ROOT


def test_concurrent_submissions_are_neither_lost_nor_duplicated() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "load_test.py"),
            "--submissions",
            "120",
            "--concurrency",
            "12",
            "--timeout",
            "120",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0, (report, out.stderr[-2000:])
    assert (report["accepted"], report["completed"]) == (120, 120)
    assert (report["lost"], report["duplicated"], report["unexpected_in_store"]) == (0, 0, 0)
    assert report["tasks_per_second"] > 0 and report["submit_p99_ms"] is not None
