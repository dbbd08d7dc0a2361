"""The OpenAPI document held to the running server: schemathesis fuzzes every operation.

Fails on any 5xx, any status code or content type the document does not list for the operation,
and any response body or header that breaks its schema. The default run has a time budget of
30 s (a couple of thousand requests here); ``-m slow`` runs four minutes. Rate and concurrency limits are
raised so that the fuzzer reaches the routes' logic instead of a 429.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import Server

CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance"
)


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "QEDIT_RATE_LIMIT_RPM": "1000000",
        "QEDIT_MAX_CONCURRENT_TASKS": "100000",
        "QEDIT_SYNC_TIMEOUT": "2",  # sync requests answer (or 504) quickly
        "QEDIT_INSTANT_STEP_DELAY": "0",
    }
    srv = Server(tmp_path_factory.mktemp("fuzz"), env).start()
    yield srv
    srv.stop()


def _fuzz(server: Server, seconds: int, examples: int, report: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{server.url}/openapi.json",
        "--header",
        f"Authorization: Bearer {server.create_key('fuzz')}",
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(examples),
        "--max-time",
        str(seconds),
        "--seed",
        "1",
        "--request-timeout",
        "20",
        "--no-shrink",
        "--continue-on-failure",
        "--suppress-health-check",
        "all",
        "--report",
        "junit",
        "--report-dir",
        str(report),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, cwd=report)


def test_every_operation_keeps_to_the_document(fuzzed_server: Server, tmp_path: Path) -> None:
    run = _fuzz(fuzzed_server, seconds=30, examples=10, report=tmp_path)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert " generated, " in run.stdout and "failed" not in run.stdout.split("Test cases:")[-1]


@pytest.mark.slow
def test_every_operation_keeps_to_the_document_at_length(fuzzed_server: Server, tmp_path: Path) -> None:
    run = _fuzz(fuzzed_server, seconds=240, examples=100, report=tmp_path)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
