"""A service's LoRA folder for tests, and files that must be refused, made from the tiny snapshot.

``lora_folder`` writes, under ``root``:

    loras/style.safetensors          a LoRA of the tiny model (the snapshot's diffusers-format sample)
    loras/kohya/                     a folder holding one LoRA (kohya keys)
    loras/not-a-lora.safetensors     a safetensors file without LoRA keys
    loras/truncated.safetensors      the first half of style.safetensors
    loras/misfit.safetensors         a LoRA of a wider transformer (valid, but not of the tiny model's shapes)
    loras/weights.bin                pickled-weights name (refused by suffix)
    loras/escape.safetensors         a symlink to outside/style.safetensors
    loras/elsewhere -> outside/      a symlinked folder leaving the LoRA folder
    outside/style.safetensors        a real LoRA outside the folder
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LoraFolder:
    folder: Path
    outside: Path

    @property
    def style(self) -> Path:
        return self.folder / "style.safetensors"


def safetensors_bytes(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def not_a_lora() -> bytes:
    """A valid safetensors file whose one tensor is no LoRA weight."""
    import torch

    return safetensors_bytes({"weight": torch.zeros(4, 4)})


def padded_lora(tiny_path: Path, pad_bytes: int) -> bytes:
    """The tiny model's sample LoRA plus one unused tensor of ``pad_bytes``: a large file whose header
    is still a few kB (to see that the API reads no further than the header)."""
    import torch
    from safetensors.torch import load

    tensors = load((tiny_path / "loras" / "style-diffusers.safetensors").read_bytes())
    tensors["padding"] = torch.zeros(pad_bytes, dtype=torch.uint8)
    return safetensors_bytes(tensors)


def lora_folder(root: Path, tiny_path: Path) -> LoraFolder:
    from qedit.engine.tiny_loras import random_lora

    folder, outside = root / "loras", root / "outside"
    folder.mkdir(parents=True)
    outside.mkdir(parents=True)
    samples = tiny_path / "loras"
    style = (samples / "style-diffusers.safetensors").read_bytes()
    (folder / "style.safetensors").write_bytes(style)
    (folder / "kohya").mkdir()
    (folder / "kohya" / "kohya.safetensors").write_bytes((samples / "style-kohya.safetensors").read_bytes())
    (folder / "truncated.safetensors").write_bytes(style[: len(style) // 2])
    (folder / "not-a-lora.safetensors").write_bytes(not_a_lora())
    config = json.loads((tiny_path / "transformer" / "config.json").read_text())
    wide = {**config, "attention_head_dim": int(config["attention_head_dim"]) * 2}
    (folder / "misfit.safetensors").write_bytes(safetensors_bytes(random_lora(wide, "peft", seed=5)))
    (folder / "weights.bin").write_bytes(b"\x80\x04not really a pickle")
    (outside / "style.safetensors").write_bytes((samples / "style-peft.safetensors").read_bytes())
    (folder / "escape.safetensors").symlink_to(outside / "style.safetensors")
    (folder / "elsewhere").symlink_to(outside, target_is_directory=True)
    return LoraFolder(folder=folder, outside=outside)
