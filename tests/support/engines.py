"""Stand-in ``EditEngine``s shared by several test modules (no model weights, no torch).

``DriftEngine`` behaves like a VAE round-trip (the whole image drifts a little every call) plus a
real local change, and finishes the way ``Engine.edit`` does (mask or box mask ->
``masks.composite`` against the edited input; else ``preserve="auto"`` -> ``masks.preserve_changes``),
so sessions can be tested for what they promise without a model.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from qedit import masks
from qedit.models.protocol import CancelToken, EditedImage, EditRequest, EditResult, StepCallback
from qedit.params import EditParams


def drift(image: Image.Image, seed: int) -> Image.Image:
    """A VAE-like round trip: 1 px blur, +-2 levels of noise, +1 overall (and it compounds)."""
    rng = np.random.default_rng(seed)
    a = np.asarray(image.filter(ImageFilter.BoxBlur(1)), dtype=np.int16)
    a = a + rng.integers(-2, 3, a.shape) + 1
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


class DriftEngine:
    """Stand-in ``EditEngine``: drifts the whole image, paints ``paint`` (a rectangle, its colour taken
    from the seed) and then, unless ``careless``, restores the untouched pixels as ``Engine`` does."""

    model_id = "drift"

    def __init__(self, paint: tuple[int, int, int, int] = (100, 80, 140, 120), careless: bool = False) -> None:
        self.paint = paint
        self.careless = careless
        self.calls: list[EditRequest] = []

    @property
    def max_images(self) -> int:
        return 1

    def edit(
        self, request: EditRequest, *, on_step: StepCallback | None = None, cancel: CancelToken | None = None
    ) -> EditResult:
        self.calls.append(request)
        params, original = request.params, request.images[-1]
        base = params.seed if params.seed >= 0 else 7
        outputs = []
        for k in range(params.num_images):
            seed = base + k
            model_input = masks.draw_boxes(original, params.boxes) if params.boxes else original
            out = drift(model_input, seed=len(self.calls) * 10 + k)
            x0, y0, x1, y1 = self.paint
            ImageDraw.Draw(out).rectangle([x0, y0, x1 - 1, y1 - 1], fill=(seed * 37 % 256, 200, 40 + k * 50))
            if not self.careless:
                out = self.finish(original, out, params, request.mask)
            if on_step is not None:
                on_step(1, 1, 0.0)
            outputs.append(EditedImage(image=out, seed=seed, metadata={"prompt": params.prompt, "seed": str(seed)}))
        return EditResult(outputs=tuple(outputs), model=self.model_id)

    @staticmethod
    def finish(original: Image.Image, out: Image.Image, params: EditParams, mask: Image.Image | None) -> Image.Image:
        if params.box_mask:
            mask = masks.boxes_mask(original.size, params.boxes)
        if mask is not None:
            em = masks.prepare_edit_mask(mask, original.size, params.mask_grow, params.mask_feather)
            return masks.composite(original, out, em)
        if params.preserve == "auto":
            return masks.preserve_changes(original, out, params.preserve_threshold)[0]
        return out
