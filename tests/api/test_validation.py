"""Every class of bad input: a 4xx JSON error naming the field, the limit and the value; nothing queued."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image, ImageDraw

from tests.support.images import b64, png_bytes

OK = b64(png_bytes())


def mask_b64(box: tuple[int, int, int, int] | None, size: tuple[int, int] = (480, 400)) -> str:
    """A black mask of the edited image's size, white (may change) inside ``box``."""
    mask = Image.new("L", size, 0)
    if box is not None:
        ImageDraw.Draw(mask).rectangle(box, fill=255)
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    return b64(buf.getvalue())


BOX = {"x0": 10, "y0": 10, "x1": 30, "y1": 30}

# (what is wrong, request body, field named, words the message must contain)
CASES = [
    ("no prompt", {"images": [OK]}, "prompt", ["required"]),
    ("blank prompt", {"prompt": "   ", "images": [OK]}, "prompt", ["empty"]),
    ("no images", {"prompt": "x", "images": []}, "images", ["at least 1"]),
    ("four images", {"prompt": "x", "images": [OK] * 4}, "images", ["at most 3", "4"]),
    ("not base64", {"prompt": "x", "images": ["%%%not-an-image%%%"]}, "images[0]", ["base64"]),
    ("not an image", {"prompt": "x", "images": [b64(b"hello world, no pixels")]}, "images[0]", ["allowed: jpg"]),
    ("gif", {"prompt": "x", "images": [b64(png_bytes(fmt="GIF"))]}, "images[0]", ["GIF", "allowed"]),
    ("too narrow", {"prompt": "x", "images": [b64(png_bytes((383, 500)))]}, "images[0]", ["384-3072", "383"]),
    ("too tall", {"prompt": "x", "images": [b64(png_bytes((400, 3073)))]}, "images[0]", ["384-3072", "3073"]),
    ("seed too big", {"prompt": "x", "images": [OK], "seed": 2**31}, "seed", ["2147483647", "2147483648"]),
    ("seed too small", {"prompt": "x", "images": [OK], "seed": -2}, "seed", ["-1", "-2"]),
    ("size too big", {"prompt": "x", "images": [OK], "size": "2048x512"}, "size", ["256-1536", "2048"]),
    ("size unparsable", {"prompt": "x", "images": [OK], "size": "big"}, "size", ["WxH", "big"]),
    ("steps", {"prompt": "x", "images": [OK], "num_inference_steps": 0}, "num_inference_steps", ["1", "0"]),
    ("cfg", {"prompt": "x", "images": [OK], "true_cfg_scale": 50}, "true_cfg_scale", ["20", "50"]),
    ("n", {"prompt": "x", "images": [OK], "num_images": 5}, "num_images", ["4", "5"]),
    ("unknown field", {"prompt": "x", "images": [OK], "strenght": 0.5}, "strenght", ["not a known field"]),
    ("box_mask without boxes", {"prompt": "x", "images": [OK], "box_mask": True}, "box_mask", ["box"]),
    (
        "mask size",
        {"prompt": "x", "images": [OK], "mask": b64(png_bytes((512, 512), mode="L"))},
        "mask",
        ["512x512", "480x400"],
    ),
    # rules that need the images (qedit.request_check): refused at submit, as the CLI refuses them
    ("box outside", {"prompt": "x", "images": [OK], "boxes": [{**BOX, "x1": 600}]}, "boxes[0]", ["480", "600"]),
    ("all-black mask", {"prompt": "x", "images": [OK], "mask": mask_b64(None)}, "mask", ["all black"]),
    (
        "mask shrunk away",
        {"prompt": "x", "images": [OK], "mask": mask_b64((10, 10, 20, 20)), "mask_grow": -20},
        "mask",
        ["shrinking by 20"],
    ),
    (
        "mask and box_mask",
        {"prompt": "x", "images": [OK], "mask": mask_b64((10, 10, 20, 20)), "boxes": [BOX], "box_mask": True},
        "mask",
        ["not both"],
    ),
    (
        "box_mask shrunk away",
        {"prompt": "x", "images": [OK], "boxes": [BOX], "box_mask": True, "mask_grow": -30},
        "boxes",
        ["shrinking by 30"],
    ),
    # LoRAs: by default only files in the server's LoRA folder (tests/api/test_loras.py has the rest)
    ("lora outside", {"prompt": "x", "images": [OK], "loras": [{"path": "/etc/passwd"}]}, "loras[0]", ["outside"]),
    ("lora hub", {"prompt": "x", "images": [OK], "loras": [{"path": "org/repo"}]}, "loras[0]", ["not allowed"]),
    ("fast steps", {"prompt": "x", "images": [OK], "fast": 4, "num_inference_steps": 9}, "fast", ["conflicts"]),
    ("http url", {"prompt": "x", "images": ["http://example.com/a.png"]}, "images[0]", ["https", "http"]),
    ("loopback url", {"prompt": "x", "images": ["https://127.0.0.1:9/a.png"]}, "images[0]", ["127.0.0.1"]),
    ("private url", {"prompt": "x", "images": ["https://10.1.2.3/a.png"]}, "images[0]", ["10.1.2.3", "private"]),
    ("link-local url", {"prompt": "x", "images": ["https://169.254.169.254/latest"]}, "images[0]", ["link-local"]),
    ("localhost url", {"prompt": "x", "images": ["https://localhost/a.png"]}, "images[0]", ["localhost"]),
    ("ftp url", {"prompt": "x", "images": ["ftp://example.com/a.png"]}, "images[0]", ["https", "ftp"]),
    ("bad task ref", {"prompt": "x", "images": ["task://nope"]}, "images[0]", ["task://"]),
    ("unknown task", {"prompt": "x", "images": ["task://" + "0" * 32 + "/0"]}, "images[0]", ["not found"]),
    ("webhook http", {"prompt": "x", "images": [OK], "webhook_url": "http://example.com/h"}, "webhook_url", ["https"]),
    (
        "webhook private",
        {"prompt": "x", "images": [OK], "webhook_url": "https://192.168.1.1/h"},
        "webhook_url",
        ["192.168.1.1"],
    ),
    (
        "webhook too long",
        {"prompt": "x", "images": [OK], "webhook_url": "https://e.com/" + "a" * 2040},
        "webhook_url",
        ["2048"],
    ),
]


@pytest.mark.parametrize(("case", "body", "field", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_native_input_is_refused_and_nothing_is_queued(
    client: httpx.Client, case: str, body: dict, field: str, words: list[str]
) -> None:
    r = client.post("/v1/edits", json=body)
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
    err = r.json()["error"]
    assert err["param"] == field, (case, err)
    for word in words:
        assert word in err["message"], (case, word, err["message"])
    assert client.get("/v1/edits").json()["data"] == []


def test_oversize_image_is_refused_by_bytes(client: httpx.Client) -> None:
    too_big = b"\x89PNG" + b"\0" * (10 * 1024 * 1024)
    r = client.post(
        "/v1/edits/upload", files=[("image", ("big.png", too_big, "image/png"))], data={"params": '{"prompt": "x"}'}
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "image[0]" and "10485760" in r.json()["error"]["message"]
    r = client.post("/v1/edits", json={"prompt": "x", "images": [b64(too_big)]})
    assert r.status_code == 400 and "10485760" in r.json()["error"]["message"]
    assert client.get("/v1/edits").json()["data"] == []


def test_bad_wavespeed_input_uses_its_envelope(client: httpx.Client) -> None:
    r = client.post("/api/v3/wavespeed-ai/qwen-image/edit", json={"prompt": "x", "image": OK, "size": "100*100"})
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == 400 and body["data"] is None and body["field"] == "size"
    assert "256-1536" in body["message"] and "100" in body["message"]
    r = client.post("/api/v3/wavespeed-ai/qwen-image/edit", json={"prompt": "x", "image": OK, "output_format": "gif"})
    assert r.status_code == 400 and r.json()["field"] == "output_format" and "gif" in r.json()["message"]
    r = client.post("/api/v3/wavespeed-ai/qwen-image/edit?webhook=http://e.com/h", json={"prompt": "x", "image": OK})
    assert r.status_code == 400 and r.json()["field"] == "webhook"
    r = client.post("/api/v3/wavespeed-ai/qwen-image/edit-plus", json={"prompt": "x", "images": [OK] * 4})
    assert r.status_code == 400 and r.json()["field"] == "images"
    assert client.get("/api/v3/predictions").json()["data"]["total"] == 0


def test_a_bad_size_is_named_by_every_interface(client: httpx.Client) -> None:
    png = png_bytes()
    r = client.post(
        "/v1/images/edits", files=[("image", ("a.png", png, "image/png"))], data={"prompt": "x", "size": "2000x512"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "size" and "2000" in r.json()["error"]["message"]
    r = client.post(
        "/v1/images/generations", json={"prompt": "x", "image_urls": [f"data:image/png;base64,{OK}"], "size": "512x10"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "size" and "256-1536" in r.json()["error"]["message"]
    assert client.get("/v1/edits").json()["data"] == []


def test_missing_or_wrong_key_is_401(server, client: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    with server.client() as anonymous:
        r = anonymous.post("/v1/edits", json={"prompt": "x", "images": [OK]})
        assert r.status_code == 401 and r.json()["error"]["param"] == "authorization"
    with server.client("qk_wrong") as wrong:
        assert wrong.get("/v1/edits").status_code == 401
    assert client.get("/v1/edits").json()["data"] == []


def test_a_snapshot_dir_model_limits_images_at_submit(tmp_path, tiny_path) -> None:  # type: ignore[no-untyped-def]
    """The served snapshot (tiny: Qwen-Image-Edit, one image) is read at submit, before any model loads."""
    from tests.support.server import Server

    srv = Server(tmp_path, {"QEDIT_MODEL": str(tiny_path), "QEDIT_AUTH": "none", "QEDIT_WORKERS": "0"})
    try:
        srv.start(wait_ready=False)
        with srv.client() as c:
            r = c.post("/v1/edits", json={"prompt": "x", "images": [OK, OK]})
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["param"] == "images" and "at most 1" in err["message"] and "got 2" in err["message"]
            assert c.get("/v1/edits").json()["data"] == []
            assert c.post("/v1/edits", json={"prompt": "x", "images": [OK]}).status_code == 202
    finally:
        srv.stop()
