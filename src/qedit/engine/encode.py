"""Stage 4: instruction + images -> Qwen2.5-VL embeddings; references -> normalised VAE latents.

The prompt goes through the VL model's chat template with the images' vision tokens in front
(``ModelSpec.build_prompt``); the last hidden state is taken, padding removed and the 64-token
system prefix dropped, as the reference does. Positive and negative conditioning are kept apart
(``Conditioning``) so the denoiser can skip the negative branch when CFG is off; true CFG runs
when scale > 1 and a negative prompt exists (" " suffices), as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from qedit.engine.latents import normalise
from qedit.engine.loader import Components
from qedit.errors import InvalidInput
from qedit.models.specs import PROMPT_TEMPLATE_DROP


@dataclass(frozen=True)
class TextEmbedding:
    embeds: torch.Tensor  # (1, T, D), D = joint_attention_dim
    mask: torch.Tensor | None  # (1, T) or None when every token is valid (the reference drops it then)


@dataclass(frozen=True)
class Conditioning:
    positive: TextEmbedding
    negative: TextEmbedding | None  # None: true CFG off (scale 1.0)


def count_prompt_tokens(components: Components, prompt: str) -> int:
    return len(components.processor.tokenizer(prompt, add_special_tokens=False).input_ids)


def check_prompt_length(components: Components, prompt: str, field: str = "prompt") -> None:
    """A prompt past the model's limit is an error, never a silent cut."""
    limit = components.spec.max_prompt_tokens
    n = count_prompt_tokens(components, prompt)
    if n > limit:
        raise InvalidInput(f"is {n} tokens; the limit of {components.spec.name} is {limit}", field=field)


@torch.inference_mode()
def encode_text(components: Components, prompt: str, images: tuple[Image.Image, ...]) -> TextEmbedding:
    """One prompt with its condition images through the VL encoder."""
    text = components.spec.build_prompt(prompt, len(images))
    inputs = components.processor(
        text=[text], images=list(images) if components.spec.is_plus else images[0], padding=True, return_tensors="pt"
    ).to(components.device)
    out = components.text_encoder(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        pixel_values=inputs.get("pixel_values"),
        image_grid_thw=inputs.get("image_grid_thw"),
        output_hidden_states=True,
    )
    hidden = out.hidden_states[-1]  # (1, L, D)
    valid = inputs["attention_mask"].bool()
    embeds = hidden[valid][PROMPT_TEMPLATE_DROP:].unsqueeze(0)  # (1, T, D): padding and system prefix removed
    return TextEmbedding(embeds=embeds.to(components.text_encoder.dtype), mask=None)


@torch.inference_mode()
def encode_reference(components: Components, image: torch.Tensor) -> torch.Tensor:
    """(1, 3, 1, H, W) in [-1, 1] -> (1, 16, 1, H/8, W/8) normalised with the VAE's mean/std (its mode)."""
    vae = components.vae
    image = image.to(device=components.device, dtype=components.dtype)
    return normalise(vae, vae.encode(image).latent_dist.mode())
