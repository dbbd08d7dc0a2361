"""OpenAI Images compatibility: the official ``openai`` SDK, unchanged, with ``base_url`` set to qedit."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from tests.support.images import png_bytes
from tests.support.server import Server


def _sdk(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{server.url}/v1", max_retries=0, timeout=30)


def test_edit_returns_b64_json(server: Server, key: str) -> None:
    result = _sdk(server, key).images.edit(
        image=("in.png", png_bytes(), "image/png"),
        prompt="make it night",
        response_format="b64_json",
        output_format="png",
    )
    assert result.data and result.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.size == (480, 400) and result.size == "480x400" and result.output_format == "png"


def test_edit_with_several_images_a_mask_and_urls(server: Server, key: str) -> None:
    mask = png_bytes((512, 512), mode="L")
    result = _sdk(server, key).images.edit(
        image=[("a.png", png_bytes(), "image/png"), ("b.png", png_bytes((512, 512)), "image/png")],
        mask=("mask.png", mask, "image/png"),
        prompt="combine",
        n=2,
        size="768x512",
        response_format="url",
    )
    assert len(result.data) == 2
    for item in result.data:
        assert item.url and Image.open(io.BytesIO(httpx.get(item.url).content)).size == (768, 512)


def test_bad_input_is_an_sdk_error_naming_the_field(server: Server, key: str) -> None:
    client = _sdk(server, key)
    with pytest.raises(openai.BadRequestError) as e:
        client.images.edit(image=("in.png", png_bytes(), "image/png"), prompt="x", n=9)
    assert e.value.status_code == 400 and e.value.param == "n" and "4" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.images.edit(image=("in.png", png_bytes(), "image/png"), prompt="x", background="transparent")
    assert e.value.param == "background"
    with pytest.raises(openai.BadRequestError) as e:
        client.images.edit(image=("in.gif", png_bytes(fmt="GIF"), "image/gif"), prompt="x")
    assert e.value.param == "image[0]" and "GIF" in e.value.message


def test_wrong_key_is_an_authentication_error(server: Server) -> None:
    with pytest.raises(openai.AuthenticationError):
        _sdk(server, "qk_nope").images.edit(image=("in.png", png_bytes(), "image/png"), prompt="x")
