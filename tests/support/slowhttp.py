"""Hostile HTTP peers on loopback: a server that trickles its headers, one whose redirects are slow.

Real sockets, so the client's whole network path (connect, header reads, redirects) is exercised.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable


class SlowPeer:
    """A threaded TCP server; ``handle(conn, path)`` answers each request however slowly it likes."""

    def __init__(self, handle: Callable[[socket.socket, str, SlowPeer], None]) -> None:
        self.handle = handle
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            request = conn.recv(65536).decode("latin-1")
            path = request.split(" ", 2)[1] if " " in request else "/"
            self.handle(conn, path, self)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def trickle_headers(conn: socket.socket, path: str, peer: SlowPeer) -> None:
    """A status line, then one header byte a second, for as long as the client listens."""
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not peer.stopped.is_set():
        conn.sendall(b"X")
        time.sleep(1.0)


def slow_redirects(delay: float) -> Callable[[socket.socket, str, SlowPeer], None]:
    """``/r/N`` waits ``delay`` s, then redirects to ``/r/N-1``; ``/r/0`` is a tiny 200."""

    def handle(conn: socket.socket, path: str, peer: SlowPeer) -> None:
        n = int(path.rsplit("/", 1)[-1]) if path.startswith("/r/") else 0
        time.sleep(delay)
        if n > 0:
            conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: /r/{n - 1}\r\nContent-Length: 0\r\n\r\n".encode())
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    return handle


def redirect_to(location: str) -> Callable[[socket.socket, str, SlowPeer], None]:
    def handle(conn: socket.socket, path: str, peer: SlowPeer) -> None:
        conn.sendall(f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode())

    return handle
