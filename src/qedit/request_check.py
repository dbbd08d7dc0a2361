"""The rules that tie an edit's parameters to its images, written once, torch-free.

``EditParams`` checks what it can alone (ranges, "box_mask needs boxes"); the rest needs the
images: how many the model takes, boxes inside the edited image, a mask that leaves something to
edit after grow/shrink, not a mask and ``box_mask`` together. The CLI, sessions, the API's submit
path and the engine all call ``check_request`` before any work starts, so a request is refused the
same way everywhere, and the API never queues (or bills) a task that cannot run.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from qedit import masks
from qedit.errors import InvalidInput
from qedit.params import EditParams

Size = tuple[int, int]


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
) -> None:
    """Raise ``InvalidInput`` naming the field if ``params`` cannot run on these images.

    ``image_sizes``: (width, height) of each image, the edited one last. ``mask_must_match``: the
    mask must have the edited image's exact size (the HTTP API's contract; the CLI resizes).
    """
    check_image_count(len(image_sizes), max_images=max_images, model=model, field=images_field)
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
        raise InvalidInput(f"model {model} takes at most {max_images} image(s), got {n}", field=field)


def _region_left(mask: Image.Image, size: Size, grow: int, field: str) -> None:
    """Something may still change once the mask is at the image's size and grown or shrunk."""
    try:
        masks.mask_region(mask, size, grow)
    except InvalidInput as e:
        raise InvalidInput(e.message, field=field) from None
