"""Latent-space helpers of stages 4-6: packing, the VAE's normalisation, stage 5's noise and schedule.

Latents are (B, 16, 1, H/8, W/8) from the VAE; the transformer reads them as 2x2 patches,
(B, H/16 * W/16, 64). The VAE's latents are normalised per channel with the statistics in its
config before the transformer sees them (stage 4) and un-normalised before decoding (stage 6), with
the reference's exact expressions. The schedule is the reference's: sigmas linspace(1, 1/N, N)
shifted by ``mu``, which grows with the number of noise tokens (dynamic shifting), so larger
images spend more steps at high noise.
"""

from __future__ import annotations

import numpy as np
import torch

CHANNELS = 16  # VAE z_dim of the family


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, h, w) -> (B, h/2 * w/2, C*4)."""
    b, c, _, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, N, C*4) -> (B, C, 1, H/8, W/8) for an image of ``height`` x ``width`` pixels."""
    b, _, c4 = latents.shape
    h, w = 2 * (height // 16), 2 * (width // 16)
    x = latents.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, 1, h, w)


def _vae_statistics(vae, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The VAE config's per-channel latent mean and std, (1, C, 1, 1, 1) each, on ``like``'s device and dtype."""
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(like.device, like.dtype)
    std = torch.tensor(vae.config.latents_std).view(shape).to(like.device, like.dtype)
    return mean, std


def normalise(vae, latents: torch.Tensor) -> torch.Tensor:
    """The VAE's (B, C, 1, h, w) latents -> the transformer's scale."""
    mean, std = _vae_statistics(vae, latents)
    return (latents - mean) / std


def denormalise(vae, latents: torch.Tensor) -> torch.Tensor:
    """The transformer's (B, C, 1, h, w) latents -> the VAE's scale.

    Divides by 1/std, not multiplies by std, as the reference does: the two differ in the last bit.
    """
    mean, std = _vae_statistics(vae, latents)
    return latents / (1.0 / std) + mean


def noise(seed: int, working: tuple[int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Packed Gaussian noise, drawn on the CPU so a seed gives the same image on any device."""
    width, height = working
    generator = torch.Generator("cpu").manual_seed(seed)
    # (1, C, 1, h, w) holds the same values in the same order as the reference's (1, 1, C, h, w)
    shape = (1, CHANNELS, 1, 2 * (height // 16), 2 * (width // 16))
    return pack(torch.randn(shape, generator=generator, dtype=dtype).to(device))


def calculate_shift(seq_len: int, base_len: int, max_len: int, base_shift: float, max_shift: float) -> float:
    """Linear in the number of noise tokens: base_shift at base_len, max_shift at max_len."""
    m = (max_shift - base_shift) / (max_len - base_len)
    return seq_len * m + (base_shift - m * base_len)


def make_scheduler(config: dict, steps: int):  # -> FlowMatchEulerDiscreteScheduler
    """A fresh scheduler per edit (schedulers keep a step index, so they cannot be shared).

    With one step the reference's terminal stretch divides 0 by 0 (its output is NaN, a black
    image); a single step from sigma 1 to 0 needs no stretch, so it is dropped there.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    if steps == 1 and config.get("shift_terminal"):
        config = {**config, "shift_terminal": None}
    return FlowMatchEulerDiscreteScheduler.from_config(config)


def timesteps(scheduler, steps: int, noise_tokens: int, device: torch.device) -> torch.Tensor:
    """Set ``scheduler``'s schedule for ``steps`` and return its timesteps (0-1000 scale)."""
    cfg = scheduler.config
    mu = calculate_shift(
        noise_tokens,
        cfg.get("base_image_seq_len", 256),
        cfg.get("max_image_seq_len", 4096),
        cfg.get("base_shift", 0.5),
        cfg.get("max_shift", 1.15),
    )
    sigmas = np.linspace(1.0, 1 / steps, steps)
    scheduler.set_timesteps(sigmas=sigmas, device=device, mu=mu)
    return scheduler.timesteps
