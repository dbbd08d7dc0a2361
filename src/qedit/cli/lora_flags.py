"""``--lora SOURCE[:SCALE]`` (repeatable) and ``--fast {4,8}``: defined once for every command that
runs an edit, and checked before the model loads.

Loading a real model takes minutes and 58 GB of reads; a LoRA path with a typo should fail in
milliseconds. So ``check_before_load`` reads each LoRA's safetensors header (no tensors) through the
store and allow-list the engine itself uses (``LoraOptions.operator()``), holds its shapes against
the model's ``transformer/config.json`` when the snapshot is already on disk, and for ``--fast``
looks for the variant's Lightning file exactly where the engine will. What cannot be seen without a
download (a hub model not fetched yet) is left to the engine, which applies the same rules after
loading; its errors name ``loras[i]`` / ``fast`` and reach the user as ``--lora[i]`` / ``--fast``
(``edit_flags.FLAG_NAMES``).

Everything here is torch-free: the checks run before anything heavy is imported.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qedit.errors import InvalidInput
from qedit.loras import lightning
from qedit.loras.spec import MAX_LORAS, SCALE_MAX, SCALE_MIN, LoraSpec

if TYPE_CHECKING:
    from qedit.loras.options import LoraOptions
    from qedit.params import EditParams


def add_lora_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--lora",
        action="append",
        metavar="SOURCE[:SCALE]",
        help=f"apply a LoRA (repeatable, at most {MAX_LORAS}): a .safetensors file or folder, a hub repo "
        f"(owner/repo[/file.safetensors]) or an https URL; SCALE {SCALE_MIN:g} to {SCALE_MAX:g}, default 1. "
        "Formats: diffusers, PEFT, DiffSynth, kohya, lightx2v, ComfyUI",
    )
    group.add_argument(
        "--fast",
        type=int,
        choices=lightning.STEPS,
        help="Lightning few-step editing: 4 or 8 steps without true CFG (sets --steps and --cfg itself; "
        "needs the variant's Lightning LoRA: see `qedit models`)",
    )


def lora_fields(args: argparse.Namespace) -> dict[str, Any]:
    """``loras`` and ``fast`` as ``EditParams`` fields (only those the user gave).

    The count and a ``--fast`` that contradicts ``--steps``/``--cfg`` are refused here, in flag terms,
    rather than in the parameter model's field names.
    """
    texts: list[str] = getattr(args, "lora", None) or []
    fields: dict[str, Any] = {}
    if len(texts) > MAX_LORAS:
        raise InvalidInput(f"at most {MAX_LORAS} LoRAs per edit, got {len(texts)}", field="loras")
    if texts:
        fields["loras"] = tuple(LoraSpec.parse(text, f"loras[{i}]") for i, text in enumerate(texts))
    fast = getattr(args, "fast", None)
    if fast is not None:
        steps, cfg = getattr(args, "steps", None), getattr(args, "cfg", None)
        if steps is not None and steps != fast:
            raise InvalidInput(f"runs {fast} steps itself; leave --steps unset (got --steps {steps})", field="fast")
        if cfg is not None and cfg != lightning.CFG:
            raise InvalidInput(f"runs without true CFG (cfg 1); leave --cfg unset (got --cfg {cfg:g})", field="fast")
        fields["fast"] = fast
    return fields


# -- the model's files, without loading it ---------------------------------------------------------


def check_before_load(model: str, params: EditParams, options: LoraOptions | None = None) -> None:
    """The LoRAs (allowed, a LoRA, of the model's shapes) and ``--fast``'s Lightning file, before loading.

    Errors name ``loras[i]`` or ``fast`` (the callers turn those into flag names).
    """
    if not params.loras and params.fast is None:
        return
    from qedit.loras.options import LoraOptions
    from qedit.models.snapshot import check_fast, local_snapshot, transformer_config

    options = options or LoraOptions.operator()
    snapshot = local_snapshot(model)
    config = transformer_config(snapshot)
    for i, spec in enumerate(params.loras):
        field = f"loras[{i}]"
        options.store.check(spec.path, field, config)
    if params.fast is not None and snapshot is not None:
        check_fast(model, snapshot, params.fast, options.lightning_dirs)


# -- what the user is told -------------------------------------------------------------------------


def describe(params: EditParams) -> str:
    """``fast 8, LoRA style x0.8``: what the edit adds to the model, for progress bars ('' if nothing)."""
    parts = [f"fast {params.fast}"] if params.fast is not None else []
    parts += [f"LoRA {_short_name(spec.path)} x{spec.scale:g}" for spec in params.loras]
    return ", ".join(parts)


def _short_name(source: str) -> str:
    return Path(source.rstrip("/")).stem or source


def summary_lines(metadata: dict[str, str], params: EditParams) -> list[str]:
    """What ran, from an output's metadata: the fast recipe and each LoRA with its sha256.

    The engine records every adapter that ran; the one ``fast`` brought is marked ``lightning``
    (a snapshot with Lightning fused in brings none).
    """
    try:
        ran = json.loads(metadata.get("loras", "[]"))
    except json.JSONDecodeError:
        ran = []
    ran = [r for r in ran if isinstance(r, dict)] if isinstance(ran, list) else []
    lines = []
    lightning = [r for r in ran if r.get("lightning")]
    if params.fast is not None:
        how = f"Lightning {_adapter(lightning[0], scale=False)}" if lightning else "Lightning fused into the model"
        lines.append(
            f"fast {params.fast}: {metadata.get('steps', params.fast)} steps, cfg {metadata.get('cfg', 1)}, {how}"
        )
    for record in ran:
        if not record.get("lightning"):
            lines.append(f"LoRA {_adapter(record)}")
    return lines


def _adapter(record: dict[str, Any], *, scale: bool = True) -> str:
    value = record.get("scale")
    shown = f" x{value:g}" if scale and isinstance(value, (int, float)) else ""
    return f"{record.get('name', '?')}{shown} (sha256 {str(record.get('sha256', '?'))[:12]})"
