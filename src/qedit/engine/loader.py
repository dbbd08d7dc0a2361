"""Model reference -> loaded components on a device, with errors that name the broken file.

A reference is a spec name (``tiny``, ``qwen-image-edit-2509``), a local diffusers-layout snapshot
directory, or a Hugging Face hub id. The variant is detected from the snapshot's
``model_index.json`` (``_class_name``, and the transformer's ``zero_cond_t`` for 2511), so a
directory of real weights needs no further flag. ``locate`` turns the reference into a snapshot
directory (writing the tiny preset, or fetching from the hub, when needed); ``load`` checks the
snapshot's files and loads its components. Weights load directly in the target dtype: loading
the 20B transformer in fp32 and casting afterwards exhausts host memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qedit.engine import memory, speed
from qedit.engine.hf import download, quiet_libraries
from qedit.engine.tiny import ensure_tiny
from qedit.errors import ModelLoadError, QeditError
from qedit.loras import lightning
from qedit.models.options import EngineOptions
from qedit.models.snapshot import detect_spec, read_json, snapshot_name
from qedit.models.specs import SPECS, ModelSpec, get_spec

log = logging.getLogger(__name__)

# folder -> files that must exist (any one of each tuple), checked before any weight is read
REQUIRED_FILES: dict[str, tuple[tuple[str, ...], ...]] = {
    "transformer": (
        ("config.json",),
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json"),
    ),
    "vae": (
        ("config.json",),
        ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.safetensors.index.json"),
    ),
    "text_encoder": (("config.json",), ("model.safetensors", "model.safetensors.index.json")),
    "tokenizer": (("tokenizer.json", "vocab.json"),),
    "processor": (("preprocessor_config.json", "processor_config.json"),),
    "scheduler": (("scheduler_config.json",),),
}


@dataclass
class Components:
    """Everything an edit needs, on one device in one dtype."""

    spec: ModelSpec
    model_id: str
    path: Path
    transformer: Any  # diffusers.QwenImageTransformer2DModel
    vae: Any  # diffusers.AutoencoderKLQwenImage
    text_encoder: Any  # transformers.Qwen2_5_VLForConditionalGeneration
    processor: Any  # transformers.Qwen2VLProcessor (its tokenizer counts prompt tokens)
    scheduler_config: dict[str, Any]  # a fresh scheduler is built per edit: schedulers hold state
    device: Any  # torch.device
    dtype: Any  # torch.dtype
    lightning_steps: int | None = None  # a snapshot with a Lightning LoRA fused in: its step count
    options: EngineOptions = field(default_factory=EngineOptions)  # how it was loaded and runs


def pick_device(device: str | None = None) -> str:
    """cuda > mps > cpu unless told otherwise."""
    import torch

    if device and device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, dtype: str | None = None):  # -> torch.dtype
    """bf16 on accelerators (the checkpoints' dtype), fp32 on CPU (bf16 matmuls are slow there)."""
    import torch

    names = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if dtype and dtype != "auto":
        if dtype not in names:
            raise ModelLoadError(f"unknown dtype {dtype!r}; choose from {', '.join(names)}", field="dtype")
        return names[dtype]
    return torch.float32 if device.startswith("cpu") else torch.bfloat16


def locate(model: str) -> tuple[Path, str]:
    """``model`` (spec name, snapshot directory or hub id) -> (snapshot directory, model id shown to users).

    The tiny presets are written on first use; a hub id is fetched into huggingface_hub's cache.
    """
    if model in SPECS and SPECS[model].tiny:
        return ensure_tiny(model), model
    path = Path(model).expanduser()
    if path.is_dir():
        return path, model
    hub_id = SPECS[model].hub_id if model in SPECS else model
    if hub_id and "/" in hub_id and not path.is_absolute() and not model.startswith("."):
        return download(hub_id), hub_id
    raise ModelLoadError(
        f"no such model directory: {model} (give a snapshot dir, a hub id, or one of: {', '.join(SPECS)})"
    )


def check_snapshot(path: Path) -> None:
    """Fail early, naming the file, rather than deep inside from_pretrained."""
    read_json(path / "model_index.json")
    for folder, groups in REQUIRED_FILES.items():
        for names in groups:
            found = [path / folder / n for n in names if (path / folder / n).is_file()]
            if not found:
                raise ModelLoadError(f"missing file {path / folder / names[0]}")
            for f in found:
                if f.suffix == ".json":
                    read_json(f)
        for weights in sorted((path / folder).glob("*.safetensors")):
            _check_safetensors(weights)


def _check_safetensors(file: Path) -> None:
    """Reads only the header; a truncated or foreign file fails here with its name."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            f.keys()
    except Exception as e:
        raise ModelLoadError(f"corrupt weights file {file}: {e}") from None


def load(
    model: str,
    device: str | None = None,
    dtype: str | None = None,
    spec: str | None = None,
    options: EngineOptions | None = None,
) -> Components:
    """Locate, check and load a model; ``spec`` overrides the detected variant.

    ``options``' memory modes are applied by ``qedit.engine.memory``: quantisation while the weights
    load, offload in place of moving them to the device (``components.device`` stays the device the
    edit computes on). A mode the device cannot run is refused before any weight is read.
    """
    import torch

    quiet_libraries()  # before diffusers' model classes are imported (see its docstring)
    from diffusers import AutoencoderKLQwenImage
    from transformers import Qwen2VLProcessor

    path, model_id = locate(model)
    check_snapshot(path)
    model_spec = get_spec(spec) if spec else detect_spec(path)
    dev = pick_device(device)
    options = options or EngineOptions()
    options.check_device(dev)
    memory.check(options)
    torch_dtype = pick_dtype(dev, dtype)
    scheduler_config = read_json(path / "scheduler" / "scheduler_config.json")
    fused = lightning.fused_steps(snapshot_name(model, path), read_json(path / "model_index.json"), scheduler_config)
    if fused is not None:
        log.info("%s has a %d-step Lightning LoRA fused in: %d steps without CFG by default", model_id, fused, fused)
    log.info(
        "loading %s (%s) on %s in %s, quantize=%s, offload=%s",
        model_id,
        model_spec.name,
        dev,
        torch_dtype,
        options.quantize,
        options.offload,
    )
    try:
        transformer = memory.load_transformer(path, options, torch_dtype, dev)
        vae = AutoencoderKLQwenImage.from_pretrained(path / "vae", dtype=torch_dtype)
        text_encoder = memory.load_text_encoder(path, options, torch_dtype, dev)
        processor = Qwen2VLProcessor.from_pretrained(path / "processor")
    except QeditError:
        raise
    except Exception as e:
        raise ModelLoadError(f"cannot load {path}: {type(e).__name__}: {e}") from None
    if model_spec.zero_cond_t != bool(transformer.config.get("zero_cond_t", False)):
        log.warning(
            "spec %s expects zero_cond_t=%s; the transformer config says otherwise",
            model_spec.name,
            model_spec.zero_cond_t,
        )
    for module in (transformer, vae, text_encoder):
        module.eval().requires_grad_(False)
    memory.place({"text_encoder": text_encoder, "transformer": transformer, "vae": vae}, options.offload, dev)
    if options.compile:
        speed.compile_blocks(transformer)
    speed.StepCache.attach(transformer, options)  # nothing when options.cache == "none"
    return Components(
        spec=model_spec,
        model_id=model_id,
        path=path,
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        processor=processor,
        scheduler_config=scheduler_config,
        device=torch.device(dev),
        dtype=torch_dtype,
        lightning_steps=fused,
        options=options,
    )
