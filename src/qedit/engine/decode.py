"""Stage 6: packed latents -> pixels at the working size (un-normalise, VAE decode)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from qedit.engine.latents import denormalise, unpack


@torch.inference_mode()
def decode(vae, latents: torch.Tensor, working: tuple[int, int]) -> Image.Image:
    """(1, N, 64) -> RGB image of ``working`` (width, height)."""
    width, height = working
    x = denormalise(vae, unpack(latents, height, width).to(vae.dtype))  # (1, 16, 1, H/8, W/8)
    image = vae.decode(x, return_dict=False)[0][:, :, 0]  # (1, 3, H, W) in [-1, 1]
    return to_pil(image)


def to_pil(image: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [-1, 1] -> 8-bit RGB, rounded as diffusers' postprocess rounds."""
    x = (image * 0.5 + 0.5).clamp(0, 1)
    arr = x[0].cpu().permute(1, 2, 0).float().numpy()
    return Image.fromarray((arr * 255).round().astype(np.uint8))
