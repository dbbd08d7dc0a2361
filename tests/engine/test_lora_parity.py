"""Parity with diffusers' LoRA path: ``load_lora_weights`` + ``set_adapters`` on its own pipeline.

Per key format, the adapted transformer's prediction is compared on the same inputs (cheap, exact
in fp32); then whole edits (two LoRAs at mixed scales; the Lightning recipe) are compared image to
image at the reference's resolutions, to within 1/255.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qedit.engine.adapters import ActiveLora
from qedit.engine.pipeline import Engine
from qedit.loras.anatomy import FORMATS
from tests.support.parity import TOLERANCE, max_diff, noise_image, reference_engine, run_both


@pytest.fixture(scope="module")
def pipe(tiny_path: Path) -> Iterator:
    from diffusers import QwenImageEditPipeline

    yield QwenImageEditPipeline.from_pretrained(tiny_path, dtype=torch.float32)


def _inputs(config: dict, seed: int = 0) -> dict:
    """One transformer call's inputs: an 8x8-token image, an 8x8 reference, 12 text tokens."""
    g = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(1, 128, config["in_channels"], generator=g),
        "encoder_hidden_states": torch.randn(1, 12, config["joint_attention_dim"], generator=g),
        "encoder_hidden_states_mask": torch.ones(1, 12, dtype=torch.long),
        "timestep": torch.tensor([0.7]),
        "img_shapes": [[(1, 8, 8), (1, 8, 8)]],
        "return_dict": False,
    }


@torch.inference_mode()
@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_adapts_the_transformer_as_diffusers_does(pipe, tiny_path: Path, fmt: str) -> None:
    engine = Engine.load(str(tiny_path))
    file = tiny_path / "loras" / f"style-{fmt}.safetensors"
    inputs = _inputs(dict(pipe.transformer.config))
    base = engine.components.transformer(**inputs)[0]
    if fmt == "peft":  # bare PEFT keys: diffusers skips them without the "transformer." prefix
        pipe.load_lora_weights({f"transformer.{k}": v for k, v in load_file(file).items()}, adapter_name=fmt)
    else:
        pipe.load_lora_weights(str(file), adapter_name=fmt)
    try:
        pipe.set_adapters([fmt], [0.8])
        theirs = pipe.transformer(**inputs)[0]
    finally:
        pipe.delete_adapters(fmt)
    lora = engine.lora_options.store.resolve(str(file), "loras[0]")
    engine.adapters.activate([ActiveLora(lora, 0.8, "loras[0]")])
    ours = engine.components.transformer(**inputs)[0]
    assert (ours - base).abs().max() > 1e-3  # the adapter acts
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # whole-edit parity stays in the default run through fast mode's test
def test_two_loras_at_mixed_scales_match_diffusers(pipe, tiny_path: Path) -> None:
    engine = reference_engine(tiny_path, None)
    kohya, comfy = (tiny_path / "loras" / f"style-{f}.safetensors" for f in ("kohya", "comfyui"))
    pipe.load_lora_weights(str(kohya), adapter_name="kohya")
    pipe.load_lora_weights(str(comfy), adapter_name="comfy")
    try:
        pipe.set_adapters(["kohya", "comfy"], [0.8, -0.5])
        ours, theirs = run_both(
            engine,
            pipe,
            [noise_image(1184, 896, 2)],
            loras=[{"path": str(kohya), "scale": 0.8}, {"path": str(comfy), "scale": -0.5}],
            prompt="paint it in the style",
            negative=" ",
            cfg=4.0,
            steps=2,
            seed=5,
        )
    finally:
        pipe.delete_adapters(["kohya", "comfy"])
    assert max_diff(ours, theirs) <= TOLERANCE


def test_fast_matches_diffusers_with_the_lightning_recipe(pipe, tiny_path: Path) -> None:
    """lightx2v's recipe in diffusers: its scheduler config (shifts ln 3, no terminal), the LoRA, cfg 1."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    engine = reference_engine(tiny_path, None)
    lightning = tiny_path / "lightning" / "Qwen-Image-Edit-Lightning-4steps-V1.0-bf16.safetensors"
    style = tiny_path / "loras" / "style-lightx2v.safetensors"
    original = pipe.scheduler
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        {**original.config, "base_shift": math.log(3), "max_shift": math.log(3), "shift_terminal": None}
    )
    pipe.load_lora_weights(str(lightning), adapter_name="lightning")
    pipe.load_lora_weights(str(style), adapter_name="style")
    try:
        pipe.set_adapters(["lightning", "style"], [1.0, 0.6])
        ours, theirs = run_both(
            engine,
            pipe,
            [noise_image(1184, 896, 4)],
            fast=4,
            loras=[{"path": str(style), "scale": 0.6}],
            prompt="turn it into a night scene",
            negative=" ",
            cfg=1.0,
            steps=4,
            seed=9,
        )
    finally:
        pipe.delete_adapters(["lightning", "style"])
        pipe.scheduler = original
    assert max_diff(ours, theirs) <= TOLERANCE
