"""Stage 7: the working-size image -> what the user gets: exact field of view and size, the
untouched pixels restored (mask or preserve), and the metadata that lets anyone re-run it."""

from __future__ import annotations

from PIL import Image

from qedit import masks
from qedit.engine.geometry import Geometry, resize
from qedit.params import EditParams


def finish(
    working_image: Image.Image,
    geometry: Geometry,
    original: Image.Image,
    out_size: tuple[int, int],
    params: EditParams,
    edit_mask: masks.EditMask | None,
) -> Image.Image:
    """Back to the source's geometry, restore what must not change, then the requested size."""
    image = geometry.to_source(working_image)
    if edit_mask is not None:
        image = masks.composite(original, image, edit_mask)
    elif params.preserve == "auto":
        image, _ = masks.preserve_changes(original, image, params.preserve_threshold)
    return image if image.size == out_size else resize(image, out_size)
