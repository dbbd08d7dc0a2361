"""Masked edits against diffusers' QwenImageEditInpaintPipeline, where the semantics match.

The latent side is the reference's: the mask binarised at the working size, nearest-resized to
the latent grid, the start latents re-noised to ``strength``, and outside the mask the latents
pulled back to the image after every step. qedit then composites onto the original in pixel
space, so the comparison is made inside the mask (outside, qedit's pixels are the input's, by
design, where the reference's went through the VAE)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from qedit.engine.pipeline import Engine
from qedit.models.protocol import EditRequest
from qedit.models.specs import MP
from qedit.params import EditParams


@pytest.mark.parametrize("strength", [1.0, pytest.param(0.6, marks=pytest.mark.slow)])
def test_masked_edit_matches_inpaint_pipeline_inside_the_mask(
    tiny_path: Path, strength: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import QwenImageEditInpaintPipeline
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_inpaint as reference

    sampled = reference.retrieve_latents

    def mode_latents(encoder_output: object, generator: object = None, sample_mode: str = "sample") -> torch.Tensor:
        return sampled(encoder_output, generator, sample_mode="argmax")

    monkeypatch.setattr(reference, "retrieve_latents", mode_latents)

    components = Engine.load(str(tiny_path)).components
    engine = Engine(dataclasses.replace(components, spec=dataclasses.replace(components.spec, vae_area=MP)))
    pipe = QwenImageEditInpaintPipeline.from_pretrained(tiny_path, dtype=torch.float32)
    rng = np.random.default_rng(4)
    image = Image.fromarray(rng.integers(0, 256, (28, 37, 3), dtype=np.uint8)).resize((1184, 896))
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).rectangle([300, 200, 799, 599], fill=255)
    params = EditParams(
        prompt="replace the box with a red ball",
        seed=9,
        num_inference_steps=3,
        strength=strength,
        mask_grow=0,
        mask_feather=0,
        fit="reference",
    )
    ours = engine.edit(EditRequest(params=params, images=(image,), mask=mask)).outputs[0].image
    theirs = pipe(
        image=image,
        mask_image=mask,
        prompt=params.prompt,
        negative_prompt=" ",
        true_cfg_scale=4.0,
        num_inference_steps=3,
        strength=strength,
        generator=torch.Generator().manual_seed(9),
    ).images[0]
    assert theirs.size == ours.size == image.size
    a, b = np.asarray(ours, dtype=np.int16), np.asarray(theirs, dtype=np.int16)
    inside = np.asarray(mask) > 0
    assert np.abs(a - b)[inside].max() <= 1
    outside = ~inside
    assert np.array_equal(a[outside], np.asarray(image, dtype=np.int16)[outside])
