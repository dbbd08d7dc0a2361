"""What a LoRA file adapts, read from its key names and shapes: format, modules, ranks.

The community ships Qwen-Image LoRAs in several key layouts, all of which diffusers' QwenImage
loader converts (``_convert_non_diffusers_qwen_lora_to_diffusers``); the engine loads them through
it. This module only *reads* the layouts, torch-free, so that the API can refuse a file that cannot
fit the served model before anything is queued, and ``qedit lora inspect`` can describe a file:

- diffusers  ``transformer.transformer_blocks.0.attn.to_q.lora_A.weight`` (``save_lora_weights``)
- peft       the same without the ``transformer.`` prefix
- diffsynth  ``transformer_blocks.0.attn.to_q.lora_A.default.weight``
- kohya      ``lora_unet_transformer_blocks_0_attn_to_q.lora_down.weight`` + ``.alpha``
- lightx2v   ``transformer_blocks.0.attn.to_q.lora_down.weight`` + ``.alpha`` (the Lightning files)
- comfyui    ``diffusion_model.transformer_blocks.0.attn.to_q.lora_A.weight`` (or lora_down/up)

The module shapes come from the transformer's ``config.json`` (``transformer_shapes``); a test holds
the table against diffusers' ``QwenImageTransformer2DModel`` so it cannot drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from qedit.errors import InvalidInput
from qedit.loras.header import SafetensorsHeader

# The linear layers of one transformer block, and outside the blocks, that a LoRA may adapt.
BLOCK_MODULES = (
    "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
    "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2",
    "img_mod.1", "txt_mod.1",
)  # fmt: skip
TOP_MODULES = (
    "img_in", "txt_in", "proj_out", "norm_out.linear",
    "time_text_embed.timestep_embedder.linear_1", "time_text_embed.timestep_embedder.linear_2",
)  # fmt: skip
PREFIXES = ("transformer.", "diffusion_model.", "base_model.model.")
SUFFIXES = (
    (".lora_A.default.weight", "A"),
    (".lora_B.default.weight", "B"),
    (".lora_A.weight", "A"),
    (".lora_B.weight", "B"),
    (".lora_down.weight", "A"),
    (".lora_up.weight", "B"),
    (".alpha", "alpha"),
)
_KOHYA_BLOCK = re.compile(r"^transformer_blocks_(\d+)_(.+)$")
_KOHYA_NAMES = {m.replace(".", "_"): m for m in (*BLOCK_MODULES, *TOP_MODULES)}
_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class LoraModule:
    """One adapted linear layer: ``down`` (rank x in) and ``up`` (out x rank)."""

    name: str  # the transformer's module name, e.g. transformer_blocks.3.attn.to_q
    rank: int
    in_features: int
    out_features: int
    has_alpha: bool

    @property
    def kind(self) -> str:
        m = _BLOCK.match(self.name)
        return m.group(2) if m else self.name

    @property
    def block(self) -> int | None:
        m = _BLOCK.match(self.name)
        return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Anatomy:
    format: str
    modules: dict[str, LoraModule]
    ignored: tuple[str, ...]  # keys diffusers drops (DoRA scales) or does not know
    size_bytes: int
    dtypes: tuple[str, ...]

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(sorted({m.rank for m in self.modules.values()}))

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(sorted({m.kind for m in self.modules.values()}))

    @property
    def blocks(self) -> tuple[int, ...]:
        return tuple(sorted({b for m in self.modules.values() if (b := m.block) is not None}))


def _split(key: str) -> tuple[str, str] | None:
    """``key`` -> (module name as the file spells it, "A" | "B" | "alpha"), or None if not a LoRA key."""
    for suffix, part in SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], part
    return None


def _module_name(raw: str) -> str:
    """The file's spelling of a module -> the transformer's dotted name."""
    if raw.startswith("lora_unet_"):
        flat = raw.removeprefix("lora_unet_")
        m = _KOHYA_BLOCK.match(flat)
        if m and m.group(2) in _KOHYA_NAMES:
            return f"transformer_blocks.{m.group(1)}.{_KOHYA_NAMES[m.group(2)]}"
        return _KOHYA_NAMES.get(flat, flat)
    for prefix in PREFIXES:
        if raw.startswith(prefix):
            return raw.removeprefix(prefix)
    return raw


FORMATS = ("diffusers", "peft", "diffsynth", "kohya", "lightx2v", "comfyui")


def lora_keys(module: str, fmt: str) -> tuple[str, str, str | None]:
    """(down, up, alpha) key names of ``module`` in a format: how such files spell it (the writers of
    test LoRAs use it; ``analyse`` reads every spelling back)."""
    if fmt == "kohya":
        base = "lora_unet_" + module.replace(".", "_")
        return f"{base}.lora_down.weight", f"{base}.lora_up.weight", f"{base}.alpha"
    if fmt == "lightx2v":
        return f"{module}.lora_down.weight", f"{module}.lora_up.weight", f"{module}.alpha"
    if fmt == "comfyui":
        base = f"diffusion_model.{module}"
        return f"{base}.lora_A.weight", f"{base}.lora_B.weight", None
    if fmt == "diffsynth":
        return f"{module}.lora_A.default.weight", f"{module}.lora_B.default.weight", None
    if fmt == "diffusers":
        return f"transformer.{module}.lora_A.weight", f"transformer.{module}.lora_B.weight", None
    if fmt == "peft":
        return f"{module}.lora_A.weight", f"{module}.lora_B.weight", None
    raise ValueError(f"unknown LoRA format {fmt!r}; known: {', '.join(FORMATS)}")


def detect_format(keys: list[str]) -> str:
    if any(k.startswith("lora_unet_") for k in keys):
        return "kohya"
    if any(k.startswith("diffusion_model.") for k in keys):
        return "comfyui"
    if any(".default." in k for k in keys):
        return "diffsynth"
    if any(".lora_down." in k for k in keys):
        return "lightx2v"
    if any(k.startswith("transformer.") for k in keys):
        return "diffusers"
    return "peft"


def analyse(header: SafetensorsHeader, source: str, field: str) -> Anatomy:
    """The modules a LoRA file adapts; a file that is not a LoRA is an error naming it."""
    parts: dict[str, dict[str, tuple[int, ...]]] = {}
    ignored: list[str] = []
    for key, info in header.tensors.items():
        split = _split(key)
        if split is None:
            ignored.append(key)
            continue
        raw, part = split
        parts.setdefault(_module_name(raw), {})[part] = info.shape
    if not parts:
        sample = ", ".join(sorted(header.tensors)[:3]) or "no tensors"
        raise InvalidInput(
            f"{source} is not a LoRA: no lora_A/lora_B or lora_down/lora_up weights ({sample})", field=field
        )
    modules: dict[str, LoraModule] = {}
    for name, p in sorted(parts.items()):
        down, up = p.get("A"), p.get("B")
        if down is None or up is None:
            missing = "down (lora_A)" if down is None else "up (lora_B)"
            raise InvalidInput(f"{source}: {name} has no {missing} weight", field=field)
        if len(down) != 2 or len(up) != 2 or down[0] != up[1]:
            raise InvalidInput(
                f"{source}: {name} has down {list(down)} and up {list(up)}, which are not a low-rank pair", field=field
            )
        modules[name] = LoraModule(
            name=name, rank=down[0], in_features=down[1], out_features=up[0], has_alpha="alpha" in p
        )
    return Anatomy(
        format=detect_format(list(header.tensors)),
        modules=modules,
        ignored=tuple(sorted(ignored)),
        size_bytes=header.file_bytes,
        dtypes=tuple(sorted({t.dtype for k, t in header.tensors.items() if not k.endswith(".alpha")})),
    )


def transformer_shapes(config: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in, out) features of every adaptable linear layer of a QwenImageTransformer2DModel."""
    inner = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    patch = int(config.get("patch_size", 2))
    out_channels = int(config.get("out_channels") or config["in_channels"])
    block = {
        **{m: (inner, inner) for m in BLOCK_MODULES[:8]},
        "img_mlp.net.0.proj": (inner, 4 * inner),
        "img_mlp.net.2": (4 * inner, inner),
        "txt_mlp.net.0.proj": (inner, 4 * inner),
        "txt_mlp.net.2": (4 * inner, inner),
        "img_mod.1": (inner, 6 * inner),
        "txt_mod.1": (inner, 6 * inner),
    }
    shapes = {
        "img_in": (int(config["in_channels"]), inner),
        "txt_in": (int(config["joint_attention_dim"]), inner),
        "proj_out": (inner, patch * patch * out_channels),
        "norm_out.linear": (inner, 2 * inner),
        "time_text_embed.timestep_embedder.linear_1": (256, inner),
        "time_text_embed.timestep_embedder.linear_2": (inner, inner),
    }
    for i in range(int(config["num_layers"])):
        shapes.update({f"transformer_blocks.{i}.{m}": s for m, s in block.items()})
    return shapes


def fit_problems(anatomy: Anatomy, config: dict[str, Any]) -> list[str]:
    """Why the LoRA cannot be applied to a transformer with this config (empty: it fits)."""
    shapes = transformer_shapes(config)
    problems = []
    for m in anatomy.modules.values():
        if m.name not in shapes:
            problems.append(f"the model has no layer {m.name}")
            continue
        want_in, want_out = shapes[m.name]
        if (m.in_features, m.out_features) != (want_in, want_out):
            problems.append(
                f"{m.name} takes {want_in} -> {want_out} features, the LoRA has {m.in_features} -> {m.out_features}"
            )
    return problems


def check_fits(anatomy: Anatomy, config: dict[str, Any], source: str, field: str) -> None:
    problems = fit_problems(anatomy, config)
    if problems:
        more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
        raise InvalidInput(f"{source} does not fit this model: {'; '.join(problems[:2])}{more}", field=field)
