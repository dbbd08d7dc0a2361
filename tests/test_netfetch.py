"""SSRF-safe fetching against a real HTTP server on 127.0.0.1: refused by default, allowed by setting."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator

import pytest

from qedit import netfetch as fetch
from qedit.errors import InvalidInput
from qedit.netfetch import UrlPolicy, fetch_bytes
from tests.support.images import png_bytes
from tests.support.receiver import Receiver

IMAGE = png_bytes()
DEV = UrlPolicy(allow_private=True, allow_http=True)


@pytest.fixture
def host() -> Iterator[Receiver]:
    r = Receiver(files={"/a.png": IMAGE, "/big.png": b"x" * 5000})
    yield r
    r.close()


def test_loopback_is_refused_by_default_and_allowed_by_setting(host: Receiver) -> None:
    url = host.url + "/a.png"
    with pytest.raises(InvalidInput, match="https") as e:  # production default: https only
        fetch_bytes(url, policy=UrlPolicy(), max_bytes=10**6, timeout=5, field="image")
    assert e.value.field == "image"
    with pytest.raises(InvalidInput, match="loopback"):  # http allowed, loopback still not
        fetch_bytes(url, policy=UrlPolicy(allow_http=True), max_bytes=10**6, timeout=5, field="image")
    assert fetch_bytes(url, policy=DEV, max_bytes=10**6, timeout=5, field="image") == IMAGE
    assert host.received == []  # nothing but the allowed GET reached it (GETs are not recorded)


def test_a_name_resolving_to_loopback_is_refused_at_connect(host: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS may point a public-looking name anywhere: the address is checked where the socket opens."""
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda h, *a, **k: real("127.0.0.1" if h == "images.example" else h, *a, **k)
    )
    url = host.url.replace("127.0.0.1", "images.example") + "/a.png"
    with pytest.raises(InvalidInput, match=r"images\.example resolves to a loopback"):
        fetch_bytes(url, policy=UrlPolicy(allow_http=True), max_bytes=10**6, timeout=5, field="image")


def test_redirects_are_re_checked(host: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Allowed first hop (127.0.0.1 here), redirect to a refused address: refused, nothing fetched."""
    monkeypatch.setattr(fetch, "address_allowed", lambda ip, policy: ip == ipaddress.ip_address("127.0.0.1"))
    host.redirects["/go"] = "http://127.0.0.2:9/a.png"
    host.redirects["/go-local"] = "/a.png"
    policy = UrlPolicy(allow_http=True)
    assert fetch_bytes(host.url + "/go-local", policy=policy, max_bytes=10**6, timeout=5, field="f") == IMAGE
    with pytest.raises(InvalidInput, match=r"127\.0\.0\.2"):
        fetch_bytes(host.url + "/go", policy=policy, max_bytes=10**6, timeout=5, field="f")
    host.redirects["/loop"] = "/loop"
    with pytest.raises(InvalidInput, match="redirects"):
        fetch_bytes(host.url + "/loop", policy=policy, max_bytes=10**6, timeout=5, field="f")


def test_size_cap_and_http_errors(host: Receiver) -> None:
    with pytest.raises(InvalidInput, match="at most 1000"):
        fetch_bytes(host.url + "/big.png", policy=DEV, max_bytes=1000, timeout=5, field="f")
    with pytest.raises(InvalidInput, match="HTTP 404"):
        fetch_bytes(host.url + "/missing.png", policy=DEV, max_bytes=1000, timeout=5, field="f")


def test_a_server_that_never_answers_times_out() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/a.png"
        with pytest.raises(InvalidInput, match=r"0\.5 s"):
            fetch_bytes(url, policy=DEV, max_bytes=1000, timeout=0.5, field="f")
    finally:
        silent.close()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fe80::1",
        "fc00::1",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_internal_addresses_are_not_allowed(address: str) -> None:
    assert not fetch.address_allowed(ipaddress.ip_address(address), UrlPolicy())
    assert fetch.address_allowed(ipaddress.ip_address(address), UrlPolicy(allow_private=True))


def test_public_addresses_are_allowed() -> None:
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"):
        assert fetch.address_allowed(ipaddress.ip_address(address), UrlPolicy())
