"""The edit-parameter flags and their mapping onto ``EditParams``, defined once for every command
that runs an edit.

``qedit edit``, ``qedit batch`` and ``qedit session edit`` call ``add_edit_arguments`` and
``params_from_args``, so a flag's name, help and mapping onto ``EditParams`` cannot drift between
commands. Flags left unset are not passed on: ``EditParams`` and the model spec keep the only copy
of the defaults and of the range checks. Extra ``EditParams`` fields that belong to another flag
group (the appearance flags in ``qedit.cli.appearance``) come in through ``params_from_args``'s
keyword arguments; ``--lora`` and ``--fast`` are ``qedit.cli.lora_flags``'. Every error about a
request field names the flag the user typed (``FLAG_NAMES``, applied by ``errors_name_flags``),
whichever layer raised it.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from qedit.cli import engine_flags, flags_given, lora_flags
from qedit.errors import InvalidInput, quote
from qedit.params import EditParams, parse_size, validate
from qedit.request_check import MAX_SIDE, MIN_SIDE, SideLimits

if TYPE_CHECKING:
    from PIL import Image

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
    "mask": "--mask",
    "mask_grow": "--mask-grow",
    "mask_feather": "--mask-feather",
    "strength": "--strength",
    "preserve": "--preserve",
    "preserve_threshold": "--preserve-threshold",
    "boxes": "--box",
    "box_mask": "--box-mask",
    "loras": "--lora",
    "fast": "--fast",
}
"""Request field (``EditParams``' and the mask) -> the flag a user typed, so an error names what they can fix."""

_PARAM_FLAGS = {
    "negative": "negative_prompt",
    "steps": "num_inference_steps",
    "cfg": "true_cfg_scale",
    "seed": "seed",
    "num": "num_images",
    "fit": "fit",
}
"""argparse dest -> ``EditParams`` field, for the flags that map straight across."""

_FIELD_HEAD = re.compile(r"[A-Za-z_]+")


def flag_field(field: str | None) -> str | None:
    """``boxes[1].colour`` -> ``--box[1].colour``: a field's leading name as its flag (others unchanged)."""
    head = _FIELD_HEAD.match(field or "")
    if head is None or head.group() not in FLAG_NAMES:
        return field
    return FLAG_NAMES[head.group()] + head.string[head.end() :]


@contextmanager
def errors_name_flags() -> Iterator[None]:
    """Re-raise an ``InvalidInput`` about a request field under the flag's name (``--box[0]: ...``)."""
    try:
        yield
    except InvalidInput as e:
        field = flag_field(e.field)
        if field == e.field:
            raise
        raise InvalidInput(e.message, field=field) from None


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
    lora_flags.add_lora_arguments(g)
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
    engine_flags.add_engine_arguments(parser)


SIDE_FLAGS = {
    "min_side": ("--min-side", "QEDIT_MIN_SIDE", MIN_SIDE),
    "max_side": ("--max-side", "QEDIT_MAX_SIDE", MAX_SIDE),
}
"""``SideLimits`` field -> (flag, the service's variable the default comes from, the built-in default)."""


def add_input_limits(parser: argparse.ArgumentParser) -> None:
    """``--min-side``/``--max-side`` for the commands that take image files (``edit``, ``batch``,
    ``session new``): the rule ``request_check.check_image_sides`` states, with the service's defaults."""
    g = parser.add_argument_group(
        "input limits", "the service's rule: each side of an input image within these (request_check.SideLimits)"
    )
    for field, (flag, variable, default) in SIDE_FLAGS.items():
        g.add_argument(
            flag,
            dest=field,
            type=int,
            metavar="PX",
            help=f"{'smallest' if field == 'min_side' else 'largest'} input side accepted "
            f"(default ${variable}, else {default})",
        )


def side_limits(args: argparse.Namespace) -> SideLimits:
    """The input-size limits: the flag, else the service's ``QEDIT_MIN_SIDE``/``QEDIT_MAX_SIDE``, else
    384-3072, so the CLI refuses what the service would. Errors name the flag or the variable."""
    values: dict[str, int] = {}
    named: dict[str, str] = {}
    for field, (flag, variable, default) in SIDE_FLAGS.items():
        given = getattr(args, field, None)
        if given is not None:
            values[field], named[field] = given, flag
            continue
        text = os.environ.get(variable, "").strip()
        named[field] = variable if text else flag
        try:
            values[field] = int(text) if text else default
        except ValueError:
            raise InvalidInput(f"must be a whole number of px, got {quote(text)}", field=variable) from None
    try:
        return SideLimits(**values)
    except InvalidInput:
        bad = next((f for f in ("min_side", "max_side") if values[f] < 1), "min_side")
        raise InvalidInput(
            f"need 1 <= min side <= max side, got {values['min_side']} and {values['max_side']}", field=named[bad]
        ) from None


def params_from_args(args: argparse.Namespace, **extra: Any) -> EditParams:
    """The flags (plus ``extra`` fields from other flag groups) as one validated ``EditParams``.

    Raises ``InvalidInput`` naming the flag (``--steps: ...``), so the CLI prints one line and exits 2
    before any model loads.
    """
    with errors_name_flags():
        data: dict[str, Any] = {
            "prompt": args.prompt,
            **flags_given(args, _PARAM_FLAGS),
            **lora_flags.lora_fields(args),
        }
        size = getattr(args, "size", None)
        if size is not None:
            data["size"] = parse_size(size)
        return validate(EditParams, {**data, **extra})


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
            raise InvalidInput(
                f"--format {fmt} does not match the output name {quote(output.name, bare=True)}", field="format"
            )
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
        getattr(args, "model", None),
        device=getattr(args, "device", None),
        dtype=getattr(args, "dtype", None),
        options=engine_flags.engine_options_from_args(args),
    )


def model_reference(args: argparse.Namespace) -> str:
    """What ``--model`` names, else the default (``$QEDIT_MODEL``, else tiny)."""
    from qedit.models.snapshot import default_model

    return getattr(args, "model", None) or default_model()


def load_checked_engine(
    args: argparse.Namespace,
    params: EditParams,
    image_sizes: Sequence[tuple[int, int]],
    mask: Image.Image | None = None,
) -> EditEngine:
    """The engine for ``--model``, loaded only once ``check_request`` accepts the edit on these images.

    The image limit comes from the model's spec without loading it (``spec_of``). A hub id's spec is
    known only from its files: before loading, it is held to the family's largest limit, and to its
    own once loaded (only the count: the rest of the rule does not depend on the model). The LoRAs'
    headers and ``--fast``'s Lightning file are checked here too (``lora_flags.check_before_load``),
    so a typo costs milliseconds, not a model load. Errors name the flags.
    """
    from qedit.models.snapshot import spec_of
    from qedit.models.specs import SPECS
    from qedit.request_check import check_image_count, check_request

    model = model_reference(args)
    spec = spec_of(model)
    limit = spec.max_images if spec is not None else max(s.max_images for s in SPECS.values())
    with errors_name_flags():
        check_request(params, image_sizes, max_images=limit, model=model, mask=mask)
        lora_flags.check_before_load(model, params)
    engine = load_engine(args)
    if spec is None:
        check_image_count(len(image_sizes), max_images=engine.max_images, model=engine.model_id)
    return engine
