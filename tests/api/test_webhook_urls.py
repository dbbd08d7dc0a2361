"""Webhook URLs naming internal addresses are refused when given, in every spelling.

Before, names and numeric forms of loopback were accepted and queued, then refused at delivery;
IPv6 forms that embed a loopback or private IPv4 address were not recognised at all.
"""

from __future__ import annotations

import ipaddress
import socket

import httpx
import pytest

from qedit.netfetch import UrlPolicy, address_allowed
from tests.support.images import b64, png_bytes

INTERNAL = [
    "https://2130706433/h",  # decimal 127.0.0.1
    "https://0177.0.0.1/h",  # octal
    "https://0x7f.0.0.1/h",  # hex
    "https://127.1/h",  # short form
    "https://127.0.0.1./h",  # trailing dot
    "https://localhost./h",
    f"https://{socket.gethostname()}/h",  # a hosts-file name of this machine
    "https://[::ffff:127.0.0.1]/h",  # IPv4-mapped
    "https://[::127.0.0.1]/h",  # IPv4-compatible
    "https://[64:ff9b::7f00:1]/h",  # NAT64 of 127.0.0.1
    "https://[64:ff9b::a00:1]/h",  # NAT64 of 10.0.0.1
    "https://[2002:7f00:1::]/h",  # 6to4 of 127.0.0.1
    "https://[2002:c0a8:101::1]/h",  # 6to4 of 192.168.1.1
    "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/h",  # Teredo, client 127.0.0.1
    "https://[::1]/h",
]


@pytest.mark.parametrize("url", INTERNAL)
def test_native_refuses_an_internal_webhook_at_submit(client: httpx.Client, url: str) -> None:
    r = client.post("/v1/edits", json={"prompt": "x", "images": [b64(png_bytes())], "webhook_url": url})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "webhook_url"
    assert not client.get("/v1/edits").json()["data"]  # nothing queued


@pytest.mark.parametrize("url", ["https://2130706433/h", "https://[64:ff9b::7f00:1]/h", "https://localhost./h"])
def test_wavespeed_refuses_an_internal_webhook_at_submit(client: httpx.Client, url: str) -> None:
    body = {"prompt": "x", "image": b64(png_bytes())}
    r = client.post("/api/v3/wavespeed-ai/qwen-image/edit", params={"webhook": url}, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "webhook"


def test_a_webhook_host_that_does_not_resolve_is_refused_saying_so(client: httpx.Client) -> None:
    body = {"prompt": "x", "images": [b64(png_bytes())], "webhook_url": "https://no-such-host.invalid/h"}
    r = client.post("/v1/edits", json=body)
    assert r.status_code == 400 and "does not resolve" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("url", ["https://2130706433/a.png", "https://[::ffff:10.0.0.1]/a.png", "https://127.1/a.png"])
def test_image_urls_in_internal_spellings_are_refused(client: httpx.Client, url: str) -> None:
    r = client.post("/v1/edits", json={"prompt": "x", "images": [url]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "images[0]", r.text


def test_embedded_public_addresses_stay_allowed() -> None:
    policy = UrlPolicy()
    for public in ("64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8", "2606:4700::1111"):
        assert address_allowed(ipaddress.ip_address(public), policy), public
