"""The appearance-editing flags (mask, grow, feather, strength, preserve, boxes), defined once.

``qedit edit`` and ``qedit session edit`` both call ``add_appearance_arguments`` and
``appearance_from_args``, so the two commands cannot drift apart. Flags left unset are not passed
on, so ``EditParams`` keeps the only copy of the defaults and of the range checks; what depends on
the image (boxes inside it, a mask that leaves something to edit) is ``qedit.request_check``'s,
run before the model loads (``edit_flags.load_checked_engine``). Errors name the flag
(``--strength``, ``--box[1]``, ``--mask``).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from PIL import Image

from qedit.cli import flags_given
from qedit.cli.edit_flags import errors_name_flags
from qedit.errors import InvalidInput, quote
from qedit.params import Box


def add_appearance_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "appearance editing",
        "confine the edit so everything else stays the input's pixels (see docs/appearance-editing.md)",
    )
    g.add_argument(
        "--mask",
        type=Path,
        metavar="FILE",
        help="mask image: white = may change, black = keep (any size; grey is cut at 50%%; "
        "a PNG with transparency is read from its alpha: transparent = may change)",
    )
    g.add_argument("--mask-grow", type=int, metavar="PX", help="grow (+) or shrink (-) the mask by PX (default 0)")
    g.add_argument(
        "--mask-feather",
        type=int,
        metavar="PX",
        help="soft blend band outside the mask, in px (default 4); beyond it every pixel is the input's",
    )
    g.add_argument(
        "--strength",
        type=float,
        metavar="S",
        help="0-1: how far the masked area may move from the input (default 1.0 = repaint fully)",
    )
    g.add_argument(
        "--preserve",
        choices=("auto", "off"),
        help="auto: restore every pixel the edit did not really change (for local edits "
        "without a mask; leave off for style or viewpoint edits); default off",
    )
    g.add_argument(
        "--preserve-threshold",
        type=float,
        metavar="DE",
        help="CIELAB ΔE counted as a real change by --preserve auto (default 6)",
    )
    g.add_argument(
        "--box",
        action="append",
        metavar="X0,Y0,X1,Y1[:COLOUR]",
        help="outline a region on the model's input (repeatable; pixels of the edited image, "
        "x1/y1 exclusive; colour a name or #rrggbb, default red)",
    )
    g.add_argument(
        "--box-mask",
        action="store_true",
        help="also use the boxes as the edit mask: outside them the output is the input",
    )


def parse_boxes(texts: list[str] | None) -> tuple[Box, ...]:
    """Each ``--box`` as a ``Box``; an error names its position (``boxes[1]``).

    A negative coordinate (``--box -5,0,10,10``, which the parser now takes as a value) is refused
    in the words of the image-bounds check (``masks.validate_boxes``): the coordinate, the limit and
    the box. It is not clipped: a box drawn on the model's input is where the user said, or nowhere.
    """
    boxes = []
    for i, text in enumerate(texts or ()):
        coords = text.partition(":")[0].split(",")
        for name, value in zip(("x0", "y0", "x1", "y1"), coords, strict=False):
            if re.fullmatch(r"\s*-\d+\s*", value):
                raise InvalidInput(
                    f"{name} must be >= 0, got {int(value)} (box {quote(text, bare=True)})", field=f"boxes[{i}]"
                )
        try:
            boxes.append(Box.parse(text))
        except InvalidInput as e:
            field = f"boxes[{i}]" + (e.field.removeprefix("box") if e.field else "")
            raise InvalidInput(e.message, field=field) from None
    return tuple(boxes)


def appearance_from_args(args: argparse.Namespace) -> tuple[Image.Image | None, dict[str, Any]]:
    """The mask image (mode "L", or ``None``) and the ``EditParams`` fields the flags set."""
    from qedit import imageio

    with errors_name_flags():
        fields = flags_given(args, ("mask_grow", "mask_feather", "strength", "preserve", "preserve_threshold"))
        boxes = parse_boxes(getattr(args, "box", None))
        if boxes:
            fields["boxes"] = boxes
        if getattr(args, "box_mask", False):
            if not boxes:
                raise InvalidInput("needs at least one --box", field="box_mask")
            fields["box_mask"] = True
        mask_path = getattr(args, "mask", None)
        mask = imageio.load_mask(mask_path, field="mask") if mask_path is not None else None
    return mask, fields
