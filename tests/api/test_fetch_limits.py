"""Slow and odd image sources: one deadline for the whole fetch, no starving of other keys, no 500s.

Before: a source trickling its headers held a submission without end (each byte came within the
per-read timeout; measured > 190 s), five 3-second redirects took 18 s against a 10 s limit, and
such submissions filled the thread pool that authentication shares, so another key's reads waited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from qedit.service.fetching import FetchPool, TooManyFetches
from tests.support.images import b64, png_bytes
from tests.support.server import Server
from tests.support.slowhttp import SlowPeer, redirect_to, slow_redirects, trickle_headers

LIMIT = 2.0  # the fetch deadline these servers run with, in seconds


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "QEDIT_ALLOW_PRIVATE_URLS": "true",  # the hostile peers live on loopback
        "QEDIT_ALLOW_HTTP_URLS": "true",
        "QEDIT_FETCH_TIMEOUT": str(LIMIT),
        "QEDIT_FETCH_PER_KEY": "60",  # high, so that one key can try to fill the pools
    }
    srv = Server(tmp_path_factory.mktemp("slow"), env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def trickle() -> Iterator[SlowPeer]:
    peer = SlowPeer(trickle_headers)
    yield peer
    peer.close()


def _submit(client: httpx.Client, url: str) -> tuple[httpx.Response, float]:
    t = time.monotonic()
    r = client.post("/v1/edits", json={"prompt": "x", "images": [url]})
    return r, time.monotonic() - t


def test_a_source_that_trickles_its_headers_ends_at_the_deadline(slow_server: Server, trickle: SlowPeer) -> None:
    with slow_server.client(slow_server.create_key()) as c:
        r, took = _submit(c, trickle.url + "/a.png")
    assert r.status_code == 400 and r.json()["error"]["param"] == "images[0]", r.text
    assert f"took more than {LIMIT:g} s" in r.json()["error"]["message"]
    assert took < LIMIT + 1.5, took


def test_slow_redirects_share_one_deadline(slow_server: Server) -> None:
    peer = SlowPeer(slow_redirects(0.8))  # each hop well inside any per-read timeout; five of them are not
    try:
        with slow_server.client(slow_server.create_key()) as c:
            r, took = _submit(c, peer.url + "/r/5")
    finally:
        peer.close()
    assert r.status_code == 400 and "took more than" in r.json()["error"]["message"], r.text
    assert took < LIMIT + 1.5, took


@pytest.mark.parametrize(
    "location",
    ["data:image/png;base64,AAAA", "mailto:a@b.c", "http://", "https:///x", "ftp://h/x", "//", "http://[::1"],
)
def test_a_redirect_anywhere_odd_is_a_400(slow_server: Server, location: str) -> None:
    peer = SlowPeer(redirect_to(location))
    try:
        with slow_server.client(slow_server.create_key()) as c:
            r, _ = _submit(c, peer.url + "/a.png")
    finally:
        peer.close()
    assert r.status_code == 400 and r.json()["error"]["param"] == "images[0]", r.text


def test_slow_sources_of_one_key_do_not_starve_another(slow_server: Server, trickle: SlowPeer) -> None:
    """45 trickling submissions of key A (more than anyio's shared pool of 40 threads) in flight,
    while key B lists its edits and submits one: B is answered at once."""
    a, b = slow_server.create_key("a"), slow_server.create_key("b")
    started = threading.Event()
    with slow_server.client(a, timeout=30) as ca, slow_server.client(b) as cb, ThreadPoolExecutor(45) as pool:
        jobs = [pool.submit(lambda: (started.set(), _submit(ca, trickle.url + "/x.png"))[1]) for _ in range(45)]
        started.wait()
        time.sleep(0.5)  # let them all reach the server
        t = time.monotonic()
        listed = cb.get("/v1/edits")
        read_s = time.monotonic() - t
        t = time.monotonic()
        submitted = cb.post("/v1/edits", json={"prompt": "y", "images": [b64(png_bytes())]})
        submit_s = time.monotonic() - t
        results = [j.result() for j in jobs]
    assert listed.status_code == 200 and read_s < 1.0, read_s
    assert submitted.status_code == 202 and submit_s < 1.0, submit_s
    assert all(r.status_code in (400, 429) for r, _ in results)


def test_a_key_may_hold_only_a_few_fetch_threads(tmp_path: Path) -> None:
    import asyncio

    pool = FetchPool(workers=8, per_key=2)
    release = threading.Event()

    async def scenario() -> list[object]:
        calls = [pool.run("k", release.wait, 5) for _ in range(3)] + [pool.run("other", lambda: "ok")]
        tasks = [asyncio.ensure_future(c) for c in calls]
        await asyncio.sleep(0.2)
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results = asyncio.run(scenario())
    finally:
        pool.close()
    refused = [r for r in results if isinstance(r, TooManyFetches)]
    assert len(refused) == 1 and refused[0].status == 429 and "at most 2" in str(refused[0])
    assert results[-1] == "ok"
