"""The rules that tie an edit's parameters to its images, written once, torch-free.

``EditParams`` checks what it can alone (ranges, "box_mask needs boxes"); the rest needs the
images: how many the model takes, boxes inside the edited image, a mask that leaves something to
edit after grow/shrink, not a mask and ``box_mask`` together. The CLI, sessions, the API's submit
path and the engine all call ``check_request`` before any work starts, so a request is refused the
same way everywhere, and the API never queues (or bills) a task that cannot run.

The size of an input image is one rule too (``check_image_sides``): every side within
``MIN_SIDE``-``MAX_SIDE`` px unless the operator or user changes the limits, applied where a file
enters: the service (``QEDIT_MIN_SIDE``/``QEDIT_MAX_SIDE``), the CLI (``--min-side``/``--max-side``,
defaulting to the same variables) and Python callers that pass ``sides`` to ``check_request``. Below
384 px the model has almost nothing to work from (a 1x1 input was "edited" into a 1x1 output), and
the limits also bound the aspect ratio (at most 8:1 by default). The engine itself does not impose
these defaults: it runs under its caller's limits (a worker under the service's configured ones),
which a second, fixed limit inside would contradict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from qedit import masks
from qedit.errors import InvalidInput, quote
from qedit.params import EditParams

Size = tuple[int, int]

MIN_SIDE = 384
"""Smallest input side in px by default, everywhere (the service's ``QEDIT_MIN_SIDE`` default)."""
MAX_SIDE = 3072
"""Largest input side in px by default, everywhere (the service's ``QEDIT_MAX_SIDE`` default)."""


@dataclass(frozen=True)
class SideLimits:
    """The input-size rule: each side of every input image within ``min_side``-``max_side`` px."""

    min_side: int = MIN_SIDE
    max_side: int = MAX_SIDE

    def __post_init__(self) -> None:
        if not 1 <= self.min_side <= self.max_side:
            raise InvalidInput(
                f"need 1 <= min_side <= max_side, got {self.min_side} and {self.max_side}", field="min_side"
            )


DEFAULT_SIDES = SideLimits()


def check_image_sides(size: Size, limits: SideLimits = DEFAULT_SIDES, field: str = "image") -> None:
    """Raise ``InvalidInput`` naming ``field`` when a side of an image of ``size`` (w, h) is out of ``limits``."""
    w, h = size
    for name, v in (("width", w), ("height", h)):
        if not limits.min_side <= v <= limits.max_side:
            raise InvalidInput(
                f"image {name} must be {limits.min_side}-{limits.max_side} px, got {v} ({w}x{h})", field=field
            )


def check_request(
    params: EditParams,
    image_sizes: Sequence[Size],
    *,
    max_images: int,
    model: str,
    mask: Image.Image | None = None,
    mask_must_match: bool = False,
    images_field: str = "images",
    mask_field: str = "mask",
    sides: SideLimits | None = None,
) -> None:
    """Raise ``InvalidInput`` naming the field if ``params`` cannot run on these images.

    ``image_sizes``: (width, height) of each image, the edited one last. ``mask_must_match``: the
    mask must have the edited image's exact size (the HTTP API's contract; the CLI resizes).
    ``sides``: also hold every image to these limits (``images[i]``); None leaves sizes to the caller.
    """
    check_image_count(len(image_sizes), max_images=max_images, model=model, field=images_field)
    if sides is not None:
        for i, size in enumerate(image_sizes):
            check_image_sides(tuple(size), sides, f"{images_field}[{i}]")
    edited = tuple(image_sizes[-1])
    if params.boxes:
        masks.validate_boxes(params.boxes, edited)
    if mask is not None:
        if params.box_mask:
            raise InvalidInput("give a mask or box_mask, not both", field=mask_field)
        if mask_must_match and tuple(mask.size) != edited:
            (mw, mh), (iw, ih) = mask.size, edited
            raise InvalidInput(
                f"mask is {mw}x{mh} but the edited (last) image is {iw}x{ih}; they must match", field=mask_field
            )
        _region_left(mask, edited, params.mask_grow, mask_field)
    elif params.box_mask:
        _region_left(masks.boxes_mask(edited, params.boxes), edited, params.mask_grow, "boxes")


def check_image_count(n: int, *, max_images: int, model: str, field: str = "images") -> None:
    """1 to the model's limit; callable alone before any image is fetched or decoded."""
    if n < 1:
        raise InvalidInput("at least 1 image is needed, got 0", field=field)
    if n > max_images:
        raise InvalidInput(f"model {quote(model, bare=True)} takes at most {max_images} image(s), got {n}", field=field)


def _region_left(mask: Image.Image, size: Size, grow: int, field: str) -> None:
    """Something may still change once the mask is at the image's size and grown or shrunk."""
    try:
        masks.mask_region(mask, size, grow)
    except InvalidInput as e:
        raise InvalidInput(e.message, field=field) from None
