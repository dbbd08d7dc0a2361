"""A local HTTP receiver for webhook and image-fetch tests (127.0.0.1 only, in a thread)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Served:
    """One GET of a file: its size and how many of its bytes the client took before it hung up."""

    path: str
    size: int
    sent: int = 0


CHUNK = 64 * 1024


@dataclass
class Receiver:
    """Records POSTs; answers 500 to the first ``fail_first`` of them; serves ``files`` on GET (each GET
    recorded in ``gets``, with the bytes sent, in the order the requests came)."""

    fail_first: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    gets: list[Served] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                )
                failing = len(receiver.received) <= receiver.fail_first
                self.send_response(500 if failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                if self.path in receiver.redirects:
                    self.send_response(302)
                    self.send_header("location", receiver.redirects[self.path])
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                data = receiver.files.get(self.path) or b""
                served = Served(self.path, len(data))
                receiver.gets.append(served)
                self.send_response(200 if self.path in receiver.files else 404)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                try:
                    for start in range(0, len(data), CHUNK):
                        self.wfile.write(data[start : start + CHUNK])
                        served.sent += len(data[start : start + CHUNK])
                except (BrokenPipeError, ConnectionResetError):  # the client read what it needed and left
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def wait_for(self, n: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
