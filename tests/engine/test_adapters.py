"""LoRAs on the tiny engine: every key format loads and acts; the base comes back bit for bit; a
failed load changes nothing; the LRU keeps adapters between requests; fast mode runs Lightning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qedit.engine.pipeline import Engine
from qedit.engine.tiny import write_tiny_snapshot
from qedit.engine.tiny_loras import random_lora, save_lora
from qedit.errors import InvalidInput
from qedit.loras.anatomy import FORMATS
from qedit.loras.options import LoraOptions
from qedit.loras.sources import LoraPolicy
from qedit.loras.store import LoraStore
from qedit.models.protocol import EditRequest
from qedit.params import EditParams


def _photo(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((128, 96), Image.Resampling.BICUBIC)


def _options(tmp: Path, **kw: object) -> LoraOptions:
    return LoraOptions(store=LoraStore(LoraPolicy.operator(), tmp / "lora-cache"), **{"lightning_dirs": (), **kw})


@pytest.fixture
def engine(tiny_path: Path, tmp_path: Path) -> Engine:
    """Its own engine: these tests load and evict adapters."""
    return Engine.load(str(tiny_path), loras=_options(tmp_path))


def _run(engine: Engine, **kw: object):
    params = EditParams(**{"prompt": "make it look like a watercolour", "seed": 3, "num_inference_steps": 2, **kw})
    return engine.edit(EditRequest(params=params, images=(_photo(),))).outputs[0]


def _pixels(out) -> np.ndarray:
    return np.asarray(out.image, dtype=np.int16)


def _config(tiny_path: Path) -> dict:
    return json.loads((tiny_path / "transformer" / "config.json").read_text())


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_key_format_loads_acts_and_leaves_the_base_exact(engine: Engine, tiny_path: Path, fmt: str) -> None:
    base = _pixels(_run(engine))
    file = tiny_path / "loras" / f"style-{fmt}.safetensors"
    out = _run(engine, loras=[{"path": str(file), "scale": 0.8}])
    assert np.abs(_pixels(out) - base).max() > 2, f"{fmt} LoRA did not change the output"
    (record,) = json.loads(out.metadata["loras"])
    assert record["name"] == f"style-{fmt}" and record["scale"] == 0.8 and len(record["sha256"]) == 64
    assert np.array_equal(_pixels(_run(engine)), base), "the base model was not restored exactly"


def test_scales_act_as_adapter_weights(engine: Engine, tiny_path: Path) -> None:
    file = str(tiny_path / "loras" / "style-kohya.safetensors")
    base = _pixels(_run(engine))
    assert np.array_equal(_pixels(_run(engine, loras=[{"path": file, "scale": 0.0}])), base)
    whole = _pixels(_run(engine, loras=[{"path": file, "scale": 1.0}]))
    halves = _pixels(_run(engine, loras=[{"path": file, "scale": 0.5}, {"path": file, "scale": 0.5}]))
    assert np.abs(whole - halves).max() <= 1  # the same file twice adds up
    negative = _pixels(_run(engine, loras=[{"path": file, "scale": -1.0}]))
    assert np.abs(negative - whole).max() > 2


def test_three_loras_at_once_each_count(engine: Engine, tiny_path: Path) -> None:
    files = [str(tiny_path / "loras" / f"style-{f}.safetensors") for f in ("kohya", "comfyui", "diffusers")]
    three = _pixels(_run(engine, loras=[{"path": f, "scale": 0.7} for f in files]))
    two = _pixels(_run(engine, loras=[{"path": f, "scale": 0.7} for f in files[:2]]))
    assert np.abs(three - two).max() > 2
    assert engine.adapters.stats.loads == 3 and engine.adapters.stats.hits == 2


def _broken_files(tmp: Path, tiny_path: Path) -> dict[str, tuple[Path, str]]:
    """Files that must be refused, and the words the refusal must contain."""
    config = _config(tiny_path)
    good = (tiny_path / "loras" / "style-diffusers.safetensors").read_bytes()
    truncated = tmp / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 16 + b"not a safetensors file")
    bigger = {**config, "num_attention_heads": 4}  # a LoRA for a wider model
    wide = save_lora(random_lora(bigger, "diffusers", seed=1), tmp / "wide.safetensors")
    deep = {**config, "num_layers": 4}  # a LoRA for a deeper model: layers this one lacks
    deeper = save_lora(random_lora(deep, "kohya", seed=2), tmp / "deeper.safetensors")
    not_lora = save_lora({"transformer_blocks.0.attn.to_q.weight": torch.zeros(64, 64)}, tmp / "weights.safetensors")
    # shapes fit layer by layer but down and up disagree on the rank: only peft finds out, mid-load
    ranks = random_lora(config, "diffusers", seed=3)
    key = next(k for k in ranks if k.endswith("lora_B.weight"))
    ranks[key] = torch.randn(ranks[key].shape[0], 6)
    mismatched = save_lora(ranks, tmp / "ranks.safetensors")
    return {
        "truncated": (truncated, "truncated.safetensors"),
        "garbage": (garbage, "garbage.safetensors"),
        "wide": (wide, "does not fit"),
        "deeper": (deeper, "transformer_blocks.2"),
        "not a lora": (not_lora, "weights.safetensors"),
        "rank mismatch": (mismatched, "ranks.safetensors"),
    }


def test_a_failed_load_names_the_file_and_leaves_the_model_bit_identical(
    engine: Engine, tiny_path: Path, tmp_path: Path
) -> None:
    style = str(tiny_path / "loras" / "style-lightx2v.safetensors")
    base = _pixels(_run(engine))
    styled = _pixels(_run(engine, loras=[{"path": style}]))
    state = {k: v.clone() for k, v in engine.components.transformer.state_dict().items()}
    for case, (file, words) in _broken_files(tmp_path, tiny_path).items():
        with pytest.raises(InvalidInput) as e:
            _run(engine, loras=[{"path": style}, {"path": str(file)}])
        assert e.value.field == "loras[1]", case
        assert words in str(e.value), f"{case}: {e.value}"
        assert np.array_equal(_pixels(_run(engine)), base), f"base changed after a failed load ({case})"
        assert np.array_equal(_pixels(_run(engine, loras=[{"path": style}])), styled), case
    after = engine.components.transformer.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)


def test_lru_keeps_adapters_and_evicts_the_oldest(tiny_path: Path, tmp_path: Path) -> None:
    engine = Engine.load(str(tiny_path), loras=_options(tmp_path, max_loaded=2))
    a, b, c = (str(tiny_path / "loras" / f"style-{f}.safetensors") for f in ("kohya", "comfyui", "peft"))
    first_a = _pixels(_run(engine, loras=[{"path": a}]))
    _run(engine, loras=[{"path": b}])
    _run(engine, loras=[{"path": a}])  # warm: no load
    assert engine.adapters.stats.loads == 2 and engine.adapters.stats.hits == 1
    _run(engine, loras=[{"path": c}])  # b is the least recently used
    assert engine.adapters.stats.evictions == 1 and len(engine.adapters.loaded) == 2
    assert np.array_equal(_pixels(_run(engine, loras=[{"path": a}])), first_a)
    assert engine.adapters.stats.loads == 3
    _run(engine, loras=[{"path": b}])  # evicted: loaded again, same result as ever
    assert engine.adapters.stats.loads == 4


def _count_passes(engine: Engine) -> list[int]:
    calls = [0]
    engine.components.transformer.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_fast_runs_the_lightning_recipe(engine: Engine, tiny_path: Path) -> None:
    calls = _count_passes(engine)
    default = _run(engine, num_inference_steps=None)
    passes_default = calls[0]
    for steps in (4, 8):
        calls[0] = 0
        out = _run(engine, num_inference_steps=None, fast=steps)
        assert calls[0] == steps  # one pass per step: true CFG off
        meta = out.metadata
        assert meta["fast"] == str(steps) and meta["steps"] == str(steps) and meta["cfg"] == "1"
        (lightning,) = json.loads(meta["loras"])
        assert lightning["name"] == f"Qwen-Image-Edit-Lightning-{steps}steps-V1.0-bf16" and lightning["scale"] == 1
        params = json.loads(meta["params"])
        assert params["fast"] == steps and params["num_inference_steps"] is None  # re-runnable as is
        assert not np.array_equal(np.asarray(out.image), np.asarray(default.image))
    assert passes_default == 2 * engine.spec.default_steps
    style = str(tiny_path / "loras" / "style-kohya.safetensors")
    both = _run(engine, num_inference_steps=None, fast=4, loras=[{"path": style, "scale": 0.8}])
    assert [r["name"] for r in json.loads(both.metadata["loras"])][1] == "style-kohya"


def test_lightning_sigmas_are_the_distilled_ones(engine: Engine) -> None:
    from qedit.engine.latents import make_scheduler, timesteps

    plan = engine.plan(EditParams(prompt="x", fast=4))
    scheduler = make_scheduler(plan.scheduler_config, plan.steps)
    for tokens in (64, 4096, 8192):  # the shift is the same at every size: base_shift = max_shift
        ts = timesteps(scheduler, plan.steps, tokens, torch.device("cpu"))
        assert torch.allclose(ts / 1000, torch.tensor([1.0, 0.9, 0.75, 0.5]), atol=1e-5)


def test_missing_lightning_files_say_where_to_put_them(tmp_path: Path) -> None:
    snap = write_tiny_snapshot(tmp_path / "plain", "edit")  # no lightning/ folder
    engine = Engine.load(str(snap), loras=_options(tmp_path, lightning_dirs=(tmp_path / "lightning",)))
    with pytest.raises(InvalidInput) as e:
        _run(engine, num_inference_steps=None, fast=8)
    assert e.value.field == "fast"
    message = str(e.value)
    assert "Qwen-Image-Edit-Lightning-8steps-V1.0-bf16.safetensors" in message
    assert str(tmp_path / "lightning") in message and "huggingface.co/lightx2v/Qwen-Image-Lightning" in message
    (tmp_path / "lightning").mkdir()
    shutil.copy(
        Engine.load("tiny").lightning_dirs[0] / "Qwen-Image-Edit-Lightning-8steps-V1.0-bf16.safetensors",
        tmp_path / "lightning",
    )
    assert _run(engine, num_inference_steps=None, fast=8).metadata["fast"] == "8"


def test_a_fused_lightning_snapshot_is_detected_and_runs_the_recipe(tiny_path: Path, tmp_path: Path) -> None:
    from diffusers import QwenImageEditPipeline

    snap = tmp_path / "tiny-edit-Lightning-8steps"
    shutil.copytree(tiny_path, snap)
    pipe = QwenImageEditPipeline.from_pretrained(snap, dtype=torch.float32)
    pipe.load_lora_weights(str(snap / "lightning" / "Qwen-Image-Edit-Lightning-8steps-V1.0-bf16.safetensors"))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    pipe.transformer.save_pretrained(snap / "transformer")
    shutil.rmtree(snap / "lightning")

    fused = Engine.load(str(snap), loras=_options(tmp_path))
    assert fused.components.lightning_steps == 8
    calls = _count_passes(fused)
    out = _run(fused, num_inference_steps=None)
    assert calls[0] == 8 and out.metadata["steps"] == "8" and out.metadata["cfg"] == "1"
    base = Engine.load(str(tiny_path), loras=_options(tmp_path))
    unfused = _run(base, num_inference_steps=None, fast=8)
    assert np.abs(_pixels(out) - _pixels(unfused)).max() <= 2  # fused vs adapter: rounding only
    with pytest.raises(InvalidInput, match="fused") as e:
        _run(fused, num_inference_steps=None, fast=4)
    assert e.value.field == "fast"
