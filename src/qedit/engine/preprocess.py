"""Stage 3: decoded images -> the sizes and tensors the model sees.

Each reference goes twice into the model, as the reference pipelines do: to the Qwen2.5-VL
encoder (semantics; plus variants at ~384x384, edit v1 at the VAE's size) and to the VAE
(appearance; ~1 MP for real models). The output's working geometry comes from the last image
(the reference's choice), planned by ``geometry`` so the way back to the user's size is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from qedit.engine.geometry import Fit, Geometry, plan, reference_dimensions, resize
from qedit.errors import InvalidInput
from qedit.models.specs import ModelSpec


@dataclass(frozen=True)
class Prepared:
    """The model's view of the inputs, before any network runs."""

    condition_images: tuple[Image.Image, ...]  # for the VL encoder
    vae_images: tuple[torch.Tensor, ...]  # (1, 3, 1, h, w) in [-1, 1], one per reference
    geometry: Geometry  # of the output (and of the last reference)
    out_size: tuple[int, int]  # what the user gets back

    @property
    def working(self) -> tuple[int, int]:
        return self.geometry.working

    @property
    def reference_shapes(self) -> list[tuple[int, int, int]]:
        """(frames, h/16, w/16) per reference, for the transformer's RoPE."""
        return [(1, t.shape[-2] // 16, t.shape[-1] // 16) for t in self.vae_images]


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (1, 3, 1, H, W) float32 in [-1, 1], the VAE's input (same maths as diffusers)."""
    arr = np.array(image).astype(np.float32) / 255.0
    tensor = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)
    return (2.0 * tensor - 1.0).unsqueeze(2)


def prepare(
    spec: ModelSpec,
    images: tuple[Image.Image, ...],
    out_size: tuple[int, int] | None = None,
    fit: Fit = "exact",
    working: tuple[int, int] | None = None,
) -> Prepared:
    """Sizes and tensors for ``images`` (RGB); ``working`` forces the output's working size."""
    if not 1 <= len(images) <= spec.max_images:
        raise InvalidInput(
            f"{spec.name} takes 1-{spec.max_images} image{'s' if spec.max_images > 1 else ''}, got {len(images)}",
            field="images",
        )
    last = images[-1]
    geometry = plan(last.size, spec.vae_area, fit, working)
    conditions, vae_inputs = [], []
    for i, img in enumerate(images):
        is_last = i == len(images) - 1
        if is_last and spec.condition_area is None:
            # edit v1: one image, resized once, seen by the VL encoder and the VAE alike
            vae_img = geometry.to_working(img) if working is None else _reference_resize(img, spec.vae_area, fit)
            conditions.append(vae_img)
            vae_inputs.append(to_tensor(vae_img))
            continue
        if is_last:
            vae_img = geometry.to_working(img) if working is None else _reference_resize(img, spec.vae_area, fit)
        else:
            vae_img = _reference_resize(img, spec.vae_area, "reference")
        vae_inputs.append(to_tensor(vae_img))
        assert spec.condition_area is not None
        conditions.append(resize(img, reference_dimensions(spec.condition_area, img.size[0] / img.size[1])))
    return Prepared(
        condition_images=tuple(conditions),
        vae_images=tuple(vae_inputs),
        geometry=geometry,
        out_size=out_size or last.size,
    )


def _reference_resize(image: Image.Image, area: int, fit: Fit) -> Image.Image:
    """A reference image at the VAE's area when the output's working size was forced."""
    if fit == "exact":
        return plan(image.size, area, "exact").to_working(image)
    return resize(image, reference_dimensions(area, image.size[0] / image.size[1]))
