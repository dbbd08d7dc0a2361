"""The edit-parameter flags, defined once for every command that runs an edit.

``qedit edit`` and ``qedit batch`` (and any later command) call ``add_edit_arguments`` and
``params_from_args``, so a flag's name, help and mapping onto ``EditParams`` cannot drift between
commands. Flags left unset are not passed on: ``EditParams`` and the model spec keep the only copy
of the defaults and of the range checks. Extra ``EditParams`` fields that belong to another flag
group (the appearance flags in ``qedit.cli.appearance``) come in through ``params_from_args``'s
keyword arguments; to give such a field a flag name in error messages, add it to ``FLAG_NAMES``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from qedit.errors import InvalidInput
from qedit.params import EditParams, parse_size, validate

if TYPE_CHECKING:
    from qedit.models.protocol import EditEngine

FLAG_NAMES: dict[str, str] = {
    "prompt": "--prompt",
    "negative_prompt": "--negative",
    "num_inference_steps": "--steps",
    "true_cfg_scale": "--cfg",
    "seed": "--seed",
    "size": "--size",
    "num_images": "--num",
    "fit": "--fit",
    "mask_grow": "--mask-grow",
    "mask_feather": "--mask-feather",
    "strength": "--strength",
    "preserve": "--preserve",
    "preserve_threshold": "--preserve-threshold",
    "boxes": "--box",
    "box_mask": "--box-mask",
}
"""``EditParams`` field -> the flag a user typed, so an error names what they can fix."""

FORMATS = ("png", "jpeg", "jpg", "webp")


def add_edit_arguments(parser: argparse.ArgumentParser, *, output_format: bool = True) -> None:
    """The model and edit-parameter flags (not ``-p``/``-o``, whose meaning differs per command).

    ``output_format=False`` leaves out ``--format`` for commands that choose the file type themselves.
    """
    g = parser.add_argument_group("edit parameters", "unset values take the model's defaults")
    g.add_argument("--negative", metavar="TEXT", help="negative prompt (what to steer away from)")
    g.add_argument("--steps", type=int, metavar="N", help="denoising steps, 1-100 (default: the model's)")
    g.add_argument(
        "--cfg", type=float, metavar="S", help="true CFG scale, 1-20; 1 turns guidance off (default: the model's)"
    )
    g.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="0-2147483647 for reproducible output, -1 random (default); the seed used is "
        "printed and stored in the output's metadata",
    )
    g.add_argument("--size", metavar="WxH", help="output size, each side 256-1536 (default: the input's size)")
    g.add_argument("--num", type=int, metavar="N", help="outputs per input, 1-4 (output i uses seed + i)")
    g.add_argument(
        "--fit",
        choices=("exact", "reference"),
        help="exact (default): no shift or zoom; reference: diffusers' stretching resize",
    )
    if output_format:
        g.add_argument("--format", choices=FORMATS, help="output format (default: from the output name, else png)")
    m = parser.add_argument_group("model")
    m.add_argument(
        "--model",
        metavar="REF",
        help="spec name (tiny, qwen-image-edit-2509, ...), snapshot directory or hub id "
        "(default: $QEDIT_MODEL, else tiny)",
    )
    m.add_argument("--device", metavar="DEV", help="cuda, cuda:1, mps, cpu (default: the best available)")
    m.add_argument(
        "--dtype", choices=("auto", "bf16", "fp16", "fp32"), help="weights' dtype (default: bf16 on GPU, fp32 on CPU)"
    )


def params_from_args(args: argparse.Namespace, **extra: Any) -> EditParams:
    """The flags (plus ``extra`` fields from other flag groups) as one validated ``EditParams``.

    Raises ``InvalidInput`` naming the flag (``--steps: ...``), so the CLI prints one line and exits 2
    before any model loads.
    """
    data: dict[str, Any] = {"prompt": args.prompt}
    size = getattr(args, "size", None)
    if size is not None:
        data["size"] = parse_size(size)
    for flag, name in (
        ("negative", "negative_prompt"),
        ("steps", "num_inference_steps"),
        ("cfg", "true_cfg_scale"),
        ("seed", "seed"),
        ("num", "num_images"),
        ("fit", "fit"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            data[name] = value
    data.update(extra)
    try:
        return validate(EditParams, data)
    except InvalidInput as e:
        if e.field is None:
            raise
        head, dot, rest = e.field.partition(".")
        flag = FLAG_NAMES.get(head)
        if flag is None:
            raise
        raise InvalidInput(e.message, field=flag + (dot + rest if rest else "")) from None


def output_format(args: argparse.Namespace) -> str:
    """``png`` | ``jpeg`` | ``webp``: ``--format``, else the extension of ``args.output`` if the command
    has an output file, else png. A ``--format`` that contradicts the output's extension is refused
    rather than writing JPEG bytes into a ``.png``."""
    from qedit import imageio

    fmt = getattr(args, "format", None)
    output = getattr(args, "output", None)
    suffix = output.suffix.lower().lstrip(".") if output is not None and hasattr(output, "suffix") else ""
    if fmt is not None:
        fmt = imageio.normalise_format(fmt)
        if suffix and suffix in imageio.OUTPUT_FORMATS and imageio.normalise_format(suffix) != fmt:
            raise InvalidInput(f"--format {fmt} does not match the output name {output.name}", field="format")
        if suffix and suffix not in imageio.OUTPUT_FORMATS:
            imageio.format_for_path(output)  # the one-line "use .png, .jpg, .jpeg or .webp" error
        return fmt
    if output is not None:
        return imageio.format_for_path(output)
    return "png"


def load_engine(args: argparse.Namespace) -> EditEngine:
    """The engine for ``--model`` / ``--device`` / ``--dtype``; imports torch, so call it late (after
    every argument and input file has been checked)."""
    from qedit.engine.pipeline import Engine

    return Engine.load(
        getattr(args, "model", None), device=getattr(args, "device", None), dtype=getattr(args, "dtype", None)
    )
