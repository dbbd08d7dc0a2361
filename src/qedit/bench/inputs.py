"""What both sides edit: one deterministic synthetic image and the working size it runs at.

A real photo would tie the bench to a file; smooth random colour fields give the encoders
structure (not flat colour) and are the same on every machine for a seed. The size rule is one for
every model: the input is a square at the spec's VAE area unless ``--size`` says otherwise, and both
sides resize it to the spec's area with the reference's rounding (``fit="reference"``).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from qedit.engine.geometry import reference_dimensions
from qedit.models.specs import ModelSpec

DEFAULT_PROMPT = "Replace the sky with a sunset and keep everything else"


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    """Smooth random colour fields: a coarse random grid upscaled bicubically."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 32), max(2, width // 32), 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)


def default_size(spec: ModelSpec) -> tuple[int, int]:
    """A square at the spec's VAE area (512x512 for ``small``, 128x128 for ``tiny``, 1024x1024 for real)."""
    side = round(math.sqrt(spec.vae_area) / 16) * 16
    return side, side


def working_size(spec: ModelSpec, size: tuple[int, int]) -> tuple[int, int]:
    """The size both sides denoise at: the spec's area, each side rounded to 32 as the reference does."""
    return reference_dimensions(spec.vae_area, size[0] / size[1])


def max_pixel_diff(a: Image.Image, b: Image.Image) -> int:
    """The largest difference of any channel of any pixel, in 8-bit levels."""
    if a.size != b.size:
        raise ValueError(f"images differ in size: {a.size} vs {b.size}")
    return int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())
