"""Stage 5: the denoising loop: flow-matching Euler steps with true CFG and its norm rescale.

The reference tokens (the VAE latents of the input images) ride along after the noise tokens in
every transformer call; only the noise part of the prediction is kept. With a mask, the latents
outside it are pulled back to the reference image re-noised to the next step's level after every
step (diffusers' QwenImageEditInpaintPipeline), so the model only repaints inside the mask.

Each transformer call runs inside ``transformer.cache_context("cond")`` or ``("uncond")``, as in
the reference: cache hooks attached to the transformer (diffusers' FirstBlockCache, cache-dit)
keep their state per context name, and without the names they would mix the two CFG branches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch

from qedit.engine.encode import Conditioning, TextEmbedding
from qedit.errors import EditCancelled
from qedit.models.protocol import CancelToken, StepCallback

Branch = Literal["cond", "uncond"]  # diffusers' cache-context names of the two CFG passes


@dataclass(frozen=True)
class LatentMask:
    """Packed (1, N, 64) mask (1 = may change) and the packed latents of the image to keep."""

    mask: torch.Tensor
    image_latents: torch.Tensor


@dataclass(frozen=True)
class DenoiseInputs:
    latents: torch.Tensor  # (1, N, 64) packed start latents (pure noise, or re-noised image for strength < 1)
    noise: torch.Tensor  # (1, N, 64) the noise drawn for this output (re-noises the kept region)
    references: torch.Tensor  # (1, M, 64) packed reference latents, all images concatenated
    img_shapes: list[tuple[int, int, int]]  # (1, h/16, w/16): the noise first, then each reference
    timesteps: torch.Tensor  # this edit's part of the schedule (0-1000 scale)
    cfg: float
    mask: LatentMask | None = None


def predict(
    transformer, x: torch.Tensor, t: torch.Tensor, text: TextEmbedding, img_shapes, n_tokens: int, branch: Branch
) -> torch.Tensor:
    """One transformer call in ``branch``'s cache context: (1, N + M, 64) -> the noise part (1, N, 64)."""
    with transformer.cache_context(branch):
        pred = transformer(
            hidden_states=x,
            timestep=t / 1000,
            encoder_hidden_states=text.embeds,
            encoder_hidden_states_mask=text.mask,
            img_shapes=[img_shapes],
            guidance=None,
            attention_kwargs={},
            return_dict=False,
        )[0]
    return pred[:, :n_tokens]


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """True CFG, then each token's vector rescaled to the conditional prediction's norm."""
    comb = uncond + scale * (cond - uncond)
    return comb * (torch.norm(cond, dim=-1, keepdim=True) / torch.norm(comb, dim=-1, keepdim=True))


@torch.inference_mode()
def denoise(
    transformer,
    scheduler,
    inputs: DenoiseInputs,
    conditioning: Conditioning,
    on_step: StepCallback | None = None,
    cancel: CancelToken | None = None,
) -> torch.Tensor:
    """Run the steps; returns the final packed latents (1, N, 64)."""
    latents = inputs.latents
    n_tokens = latents.shape[1]
    total = len(inputs.timesteps)
    start = time.perf_counter()
    for i, t in enumerate(inputs.timesteps):
        if cancel is not None and cancel.cancelled:
            raise EditCancelled(f"cancelled before step {i + 1}/{total}")
        x = torch.cat([latents, inputs.references], dim=1)  # (1, N + M, 64)
        timestep = t.expand(latents.shape[0]).to(latents.dtype)
        pred = predict(transformer, x, timestep, conditioning.positive, inputs.img_shapes, n_tokens, "cond")
        if conditioning.negative is not None:
            uncond = predict(transformer, x, timestep, conditioning.negative, inputs.img_shapes, n_tokens, "uncond")
            pred = guided(pred, uncond, inputs.cfg)
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]
        if inputs.mask is not None:
            latents = _keep_outside(scheduler, latents, inputs, i)
        if on_step is not None:
            on_step(i + 1, total, time.perf_counter() - start)
    return latents


def _keep_outside(scheduler, latents: torch.Tensor, inputs: DenoiseInputs, i: int) -> torch.Tensor:
    """Outside the mask, the reference image at the noise level the next step expects."""
    assert inputs.mask is not None
    kept = inputs.mask.image_latents
    if i < len(inputs.timesteps) - 1:
        kept = scheduler.scale_noise(kept, torch.tensor([inputs.timesteps[i + 1]]), inputs.noise)
    m = inputs.mask.mask
    return (1 - m) * kept + m * latents
