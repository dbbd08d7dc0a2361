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
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qedit.engine import memory, speed
from qedit.engine.hf import download, quiet_libraries
from qedit.engine.tiny import ensure_tiny
from qedit.errors import ModelLoadError, QeditError, one_line, quote
from qedit.loras import lightning
from qedit.models.options import EngineOptions
from qedit.models.snapshot import canonical_model, check_files, detect_spec, read_json, snapshot_name
from qedit.models.specs import SPECS, ModelSpec, get_spec

log = logging.getLogger(__name__)


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
            raise ModelLoadError(f"unknown dtype {quote(dtype)}; choose from {', '.join(names)}", field="dtype")
        return names[dtype]
    return torch.float32 if device.startswith("cpu") else torch.bfloat16


def locate(model: str) -> tuple[Path, str]:
    """``model`` (spec name, snapshot directory or hub id) -> (snapshot directory, model id shown to users).

    The tiny presets are written on first use; a hub id is fetched into huggingface_hub's cache. The id
    is ``canonical_model``'s: a directory is named by its resolved absolute path, however it was typed.
    """
    if model in SPECS and SPECS[model].tiny:
        return ensure_tiny(model), model
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve(), canonical_model(model)
    hub_id = SPECS[model].hub_id if model in SPECS else model
    if hub_id and "/" in hub_id and not path.is_absolute() and not model.startswith("."):
        return download(hub_id), hub_id
    raise ModelLoadError(
        f"no such model directory: {quote(model, 200, bare=True)} (give a snapshot dir, a hub id, or one of: "
        f"{', '.join(SPECS)})"
    )


def check_snapshot(path: Path) -> None:
    """Fail early, naming the file, rather than deep inside from_pretrained (``snapshot.check_files``,
    the same check ``qedit models`` lists snapshots by)."""
    check_files(path)


def check_scheduler_config(config: dict[str, Any], file: Path) -> None:
    """The scheduler config's values have the types diffusers' scheduler declares, and a schedule can be
    built from them, for one step and for several, plain and with the Lightning recipe's overrides.

    Without this a bad value (``"base_shift": "abc"``, an unknown ``time_shift_type``) loads fine and
    fails at the first edit with a traceback from inside diffusers; here it is one line naming the file.
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler
    from pydantic import TypeAdapter, ValidationError

    from qedit.engine.latents import make_scheduler, timesteps

    try:
        hints = typing.get_type_hints(FlowMatchEulerDiscreteScheduler.__init__)
    except Exception:  # an annotation this Python cannot evaluate: the trial below still runs
        hints = {}
    for key, value in config.items():
        if key.startswith("_") or key not in hints:
            continue
        try:
            TypeAdapter(hints[key]).validate_python(value, strict=True)
        except ValidationError:
            hint = hints[key]
            expected = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            raise ModelLoadError(f"{file}: {key} is {quote(value)}, expected {expected}") from None
        except Exception:  # an annotation pydantic cannot check: left to the trial
            continue
    try:
        for cfg in (config, lightning.scheduler_config(config)):
            for steps in (1, 4):
                ts = timesteps(make_scheduler(cfg, steps), steps, 1024, torch.device("cpu"))
                if not bool(torch.isfinite(ts).all()):
                    raise ValueError(f"the {steps}-step schedule is not finite: {ts.tolist()}")
    except Exception as e:  # diffusers' ValueError, a TypeError from arithmetic on a bad value
        raise ModelLoadError(one_line(f"{file}: unusable scheduler config: {type(e).__name__}: {e}")) from None


@contextmanager
def _component(path: Path, folder: str) -> Iterator[None]:
    """An error while a component loads names its folder and config file, on one line."""
    try:
        yield
    except QeditError:
        raise
    except Exception as e:
        raise ModelLoadError(
            one_line(f"cannot load {folder} from {path / folder} (config.json or weights): {type(e).__name__}: {e}")
        ) from None


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
    scheduler_file = path / "scheduler" / "scheduler_config.json"
    scheduler_config = read_json(scheduler_file)
    check_scheduler_config(scheduler_config, scheduler_file)
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
    with _component(path, "transformer"):
        transformer = memory.load_transformer(path, options, torch_dtype, dev)
    with _component(path, "vae"):
        vae = AutoencoderKLQwenImage.from_pretrained(path / "vae", dtype=torch_dtype)
    with _component(path, "text_encoder"):
        text_encoder = memory.load_text_encoder(path, options, torch_dtype, dev)
    with _component(path, "processor"):
        processor = Qwen2VLProcessor.from_pretrained(path / "processor")
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
