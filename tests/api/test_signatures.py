"""Signed URLs and keys typed by anyone: odd characters are refused with the service's JSON error.

``hmac.compare_digest`` raises on a str with non-ASCII characters; a ``sig`` of "é" used to end
in a bare 500 on the file, upload and image-input paths.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.images import b64, png_bytes
from tests.support.server import Server, wait_status

ODD = ["é", "∂∂∂", "\u0000", "%FF", "a" * 128, ""]


@pytest.fixture(scope="module")
def result_url(server: Server) -> str:
    with server.client(server.create_key("sig")) as c:
        body = {"prompt": "x", "images": [b64(png_bytes())]}
        task = wait_status(c, c.post("/v1/edits", json=body).json()["id"])
    return task["outputs"][0]["url"]


def _with_sig(url: str, sig: str) -> str:
    return str(httpx.URL(url).copy_set_param("sig", sig))


@pytest.mark.parametrize("sig", ODD)
def test_a_file_url_with_an_odd_signature_is_a_403(result_url: str, sig: str) -> None:
    r = httpx.get(_with_sig(result_url, sig))
    assert r.status_code in (400, 403), r.text
    assert r.json()["error"]["param"] == "sig"


@pytest.mark.parametrize("sig", ["é", "∂∂∂"])
def test_an_upload_url_with_an_odd_signature_is_a_403(client: httpx.Client, sig: str) -> None:
    r = client.post("/api/v3/media/uploads", json={"filename": "a.png", "size": 100})
    assert r.status_code == 200, r.text
    put = _with_sig(r.json()["data"]["upload"]["url"], sig)
    r = httpx.put(put, content=png_bytes())
    assert r.status_code == 403 and r.json()["field"] == "sig", r.text


def test_an_image_input_url_with_an_odd_signature_is_a_400(client: httpx.Client, result_url: str) -> None:
    r = client.post("/v1/edits", json={"prompt": "x", "images": [_with_sig(result_url, "é")]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "images[0]"


@pytest.mark.parametrize("token", ["é" * 10, "sk-\u00ff\u00fe"])
def test_a_key_with_odd_characters_is_a_401(server: Server, token: str) -> None:
    r = httpx.get(f"{server.url}/v1/edits", headers={"authorization": f"Bearer {token}".encode("latin-1")})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
