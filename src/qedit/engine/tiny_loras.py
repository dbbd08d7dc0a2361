"""Random LoRAs for the tiny preset, in every key format the community ships, and its Lightning files.

Real LoRAs cannot be downloaded here, and the loader must be exercised on each real key layout
(diffusers, PEFT, DiffSynth, kohya with alpha, lightx2v, ComfyUI), so qedit writes its own: random
low-rank pairs of the shapes the tiny transformer's config gives, seeded, as ``.safetensors``.
``qedit tiny-model --with-loras`` and the cached ``--model tiny`` snapshots carry them:

    <snapshot>/loras/style-<format>.safetensors        one per format (different weights)
    <snapshot>/lightning/<family>-Lightning-{4,8}steps-V1.0-bf16.safetensors

so ``--lora`` and ``--fast`` run out of the box on the tiny preset. Their effect is as random as the
model's: they prove the plumbing and the maths, not a style.
"""

from __future__ import annotations

import json
from pathlib import Path

from qedit.files import write_atomic
from qedit.loras import lightning
from qedit.loras.anatomy import BLOCK_MODULES, FORMATS, lora_keys, transformer_shapes

STYLE_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "img_mlp.net.0.proj", "img_mlp.net.2")


def random_lora(
    config: dict,
    fmt: str,
    *,
    seed: int,
    rank: int = 4,
    alpha: float | None = None,
    targets: tuple[str, ...] = STYLE_TARGETS,
    strength: float = 0.5,
    dtype: str = "float32",
) -> dict:  # -> dict[str, torch.Tensor]
    """A LoRA of the transformer described by ``config`` in format ``fmt``; ``alpha`` only where the
    format carries one (kohya, lightx2v: default rank / 2, so the alpha scaling is exercised)."""
    import torch

    shapes = transformer_shapes(config)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i in range(int(config["num_layers"])):
        for target in targets:
            module = f"transformer_blocks.{i}.{target}"
            n_in, n_out = shapes[module]
            down_key, up_key, alpha_key = lora_keys(module, fmt)
            out[down_key] = (torch.randn(rank, n_in, generator=g) / n_in**0.5).to(getattr(torch, dtype))
            out[up_key] = (torch.randn(n_out, rank, generator=g) * strength / rank**0.5).to(getattr(torch, dtype))
            if alpha_key is not None:
                out[alpha_key] = torch.tensor(float(alpha if alpha is not None else rank / 2))
    return out


def save_lora(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, save(tensors, metadata=metadata))
    return path


def write_tiny_loras(snapshot: Path, family: str) -> dict[str, Path]:
    """Sample LoRAs (one per format) and the Lightning files of ``family`` into the snapshot."""
    config = json.loads((snapshot / "transformer" / "config.json").read_text())
    written = {}
    for k, fmt in enumerate(FORMATS):
        tensors = random_lora(config, fmt, seed=100 + k)
        written[fmt] = save_lora(tensors, snapshot / "loras" / f"style-{fmt}.safetensors")
    for steps in lightning.STEPS:
        tensors = random_lora(
            config, "lightx2v", seed=200 + steps, rank=8, alpha=8, targets=BLOCK_MODULES, strength=0.2, dtype="bfloat16"
        )
        path = snapshot / "lightning" / lightning.file_name(family, steps)
        written[f"lightning-{steps}"] = save_lora(tensors, path)
    return written
