"""Running one edit through qedit and through diffusers' own pipeline, and comparing the images.

The reference runs at its own resolutions (1 MP output and VAE inputs, 384x384 VL inputs for the
plus variants), so qedit's tiny engine is given the same areas; inputs are smooth random colour
fields, structure for the encoders rather than flat colour.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from qedit.engine.pipeline import Engine
from qedit.models.protocol import EditRequest
from qedit.models.specs import MP
from qedit.params import EditParams

TOLERANCE = 1  # in 8-bit levels: 1/255


def noise_image(w: int, h: int, seed: int) -> Image.Image:
    """Smooth random colour fields: structure for the encoders, not flat colour."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)


def reference_engine(path: Path, condition_area: int | None) -> Engine:
    """The tiny model at the reference's areas, so both pipelines see the same sizes."""
    components = Engine.load(str(path)).components
    spec = dataclasses.replace(components.spec, vae_area=MP, condition_area=condition_area)
    return Engine(dataclasses.replace(components, spec=spec))


def max_diff(ours: Image.Image, theirs: Image.Image) -> int:
    assert ours.size == theirs.size
    return int(np.abs(np.asarray(ours, dtype=np.int16) - np.asarray(theirs, dtype=np.int16)).max())


def run_both(engine: Engine, pipe, images: list[Image.Image], **kw) -> tuple[Image.Image, Image.Image]:
    """The same edit through qedit and through a diffusers pipeline; ``loras``/``fast`` go to qedit
    only (the caller sets the pipeline up with the same adapters and scheduler)."""
    params = EditParams(
        loras=kw.get("loras", ()),
        fast=kw.get("fast"),
        prompt=kw["prompt"],
        negative_prompt=kw["negative"],
        true_cfg_scale=None if kw.get("fast") else kw["cfg"],
        num_inference_steps=None if kw.get("fast") else kw["steps"],
        seed=kw["seed"],
        fit="reference",
    )
    ours = engine.edit(EditRequest(params=params, images=tuple(images))).outputs[0].image
    theirs = pipe(
        image=images if engine.spec.is_plus else images[0],
        prompt=kw["prompt"],
        negative_prompt=kw["negative"],
        true_cfg_scale=kw["cfg"],
        num_inference_steps=kw["steps"],
        generator=torch.Generator().manual_seed(kw["seed"]),
    ).images[0]
    return ours, theirs
