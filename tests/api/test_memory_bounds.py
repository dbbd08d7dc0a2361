"""The server's memory per request is bounded: sizes checked from headers, bodies capped and
authenticated before they are read.

Before: a 390 KB PNG declaring 8192x8192 16-bit pixels was decoded before the 384-3072 px check;
four at once raised the server's peak RSS by 1006 MB. A 200 MB JSON body with no key was read and
parsed before its 401. After: +6 MB for the four, nothing for the body (refused in 0.2 s).
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import b64
from tests.support.server import Server

MB = 1024 * 1024


def png_bomb(width: int = 8192, height: int = 8192) -> bytes:
    """A valid PNG declaring ``width`` x ``height`` 16-bit RGB, all zeros: a few hundred KB compressed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + width * 6)  # filter byte + 3 channels x 2 bytes
    packer = zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def peak_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def lean_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("lean")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb()


def _parallel(n: int, fn: object) -> list[httpx.Response]:
    out: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: out.append(fn())) for _ in range(n)]  # type: ignore[operator]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_images_declaring_huge_sizes_are_refused_before_decoding(lean_server: Server, bomb: bytes) -> None:
    assert len(bomb) < 600_000
    key = lean_server.create_key()
    assert lean_server.proc is not None
    before = peak_mb(lean_server.proc.pid)
    with lean_server.client(key, timeout=60) as c:
        json_refusals = _parallel(4, lambda: c.post("/v1/edits", json={"prompt": "x", "images": [b64(bomb)]}))
        form_refusals = _parallel(
            4, lambda: c.post("/v1/images/edits", data={"prompt": "x"}, files={"image": ("b.png", bomb, "image/png")})
        )
    for r in json_refusals + form_refusals:
        assert r.status_code == 400, r.text
        assert "must be 384-3072 px, got 8192 (8192x8192)" in r.json()["error"]["message"]
    grew = peak_mb(lean_server.proc.pid) - before
    assert grew < 60, f"peak RSS grew {grew:.0f} MB"


def _body(total_mb: int) -> Iterator[bytes]:
    """A JSON document of ``total_mb`` MB, streamed (chunked) so that the test itself stays small."""
    yield b'{"prompt": "'
    block = b"a" * MB
    for _ in range(total_mb):
        yield block
    yield b'", "images": []}'


def test_a_huge_body_without_a_key_is_refused_unread(lean_server: Server) -> None:
    assert lean_server.proc is not None
    before = peak_mb(lean_server.proc.pid)
    r = httpx.post(f"{lean_server.url}/v1/edits", content=_body(200), headers={"content-type": "application/json"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key", r.text
    assert peak_mb(lean_server.proc.pid) - before < 20


def test_a_huge_body_with_a_key_is_cut_at_the_cap(lean_server: Server) -> None:
    key = lean_server.create_key()
    assert lean_server.proc is not None
    before = peak_mb(lean_server.proc.pid)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    r = httpx.post(f"{lean_server.url}/v1/edits", content=_body(200), headers=headers, timeout=60)
    assert r.status_code == 413, r.text
    assert "at most" in r.json()["error"]["message"]
    with socket.create_connection(("127.0.0.1", lean_server.port)) as sock:  # declares 300 MB, sends none
        sock.sendall(
            f"POST /v1/edits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {300 * MB}\r\n\r\n".encode()
        )
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        text = answer.read().decode()
    assert answer.status == 413 and f"is {300 * MB} bytes" in text, text
    grew = peak_mb(lean_server.proc.pid) - before
    assert grew < 150, f"peak RSS grew {grew:.0f} MB"  # at most the cap (54 MB by default) buffered, once


def test_an_upload_by_signed_url_needs_no_key_but_keeps_the_cap(lean_server: Server) -> None:
    with lean_server.client(lean_server.create_key()) as c:
        up = c.post("/api/v3/media/uploads", json={"filename": "a.png", "size": 100}).json()["data"]
    r = httpx.put(up["upload"]["url"], content=_body(80))
    assert r.status_code in (400, 413), r.text  # refused by the route's 10 MB limit or the body cap
