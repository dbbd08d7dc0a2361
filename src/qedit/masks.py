"""Appearance edits that keep their promise: masks, preservation, compositing, region boxes.

Pixel space only (numpy + PIL, no torch) so the API layer can validate masks and boxes without
loading the engine. The latent side of a masked edit (latents pulled back to the image outside the
mask at every step, as diffusers' ``QwenImageEditInpaintPipeline`` does) lives in ``denoise.py``;
this module owns the last word: after decoding, the result is composited onto the original so
that every pixel outside the grown-and-feathered mask is the input's byte for byte, whatever the
VAE round-trip did to it.

Mask semantics match the reference's mask processor: any size (resized with Lanczos to the image),
grayscale binarised at 0.5 (a pixel value >= 128 may change), white = may change, black = keep.
Softness comes only from ``feather``, and it lies *outside* the binary region, so the user's
white area is always fully edited and ``keep`` is exactly where the output must equal the input.

Morphology uses an exact Euclidean distance bounded by the radius in play (one row pass, then
``radius`` vectorised column passes), so grow/shrink/feather are disks rather than squares and
cost O(H * W * radius) without scipy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageColor, ImageDraw, ImageFilter

from qedit.errors import InvalidInput, quote
from qedit.params import Box

MASK_THRESHOLD = 128  # the reference binarises mask / 255 at 0.5: 127 keeps, 128 may change

# preserve="auto" clean-up, in px at the image's own scale (see preserve_changes)
PRESERVE_BLUR = 1.5  # Gaussian radius applied to both images before differencing: VAE grain is finer
PRESERVE_SPECK = 2  # opening radius: isolated changed blobs narrower than ~2*this are drift, not edits
PRESERVE_CLOSE = 6  # closing radius: holes and gaps inside a real change are filled
PRESERVE_MARGIN = 4  # extra growth so the change's own soft edge is taken whole
PRESERVE_FEATHER = 4  # blend band outside the change region


@dataclass(frozen=True)
class EditMask:
    """Where an edit may act, at the edited image's size.

    ``binary``: bool (H, W), the region after threshold and grow/shrink; the model's own edit area.
    ``soft``: float32 (H, W) blending weight, 1 on ``binary`` and falling to 0 across ``feather`` px
    outside it; exactly 0 beyond that band, which is the guarantee ``composite`` keeps.
    """

    binary: np.ndarray
    soft: np.ndarray

    @property
    def keep(self) -> np.ndarray:
        """Pixels that come out bit-identical to the original (bool (H, W))."""
        return self.soft == 0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL counts."""
        h, w = self.binary.shape
        return w, h


# -- morphology ---------------------------------------------------------------------------------


def distance_to(region: np.ndarray, limit: int) -> np.ndarray:
    """Euclidean distance (px) from each pixel to the nearest ``True`` pixel of ``region``.

    Exact wherever it is <= ``limit``; anywhere farther the value is only guaranteed to be > ``limit``
    (bounding the search is what keeps this cheap). Pixels outside the image do not exist, so a
    region touching the border is neither eaten nor extended by it.
    """
    region = np.asarray(region, dtype=bool)
    h, w = region.shape
    limit = max(int(limit), 0)
    far = limit + 1
    xs = np.arange(w, dtype=np.int64)
    # row pass: horizontal distance to the nearest True in the same row (capped at far)
    left = np.maximum.accumulate(np.where(region, xs, -(10**9)), axis=1)
    right = np.minimum.accumulate(np.where(region, xs, 10**9)[:, ::-1], axis=1)[:, ::-1]
    g = np.minimum(np.minimum(xs - left, right - xs), far).astype(np.float32)
    g2 = g * g
    best = g2.copy()
    # column pass: best over rows within the limit of (row distance)^2 + dy^2
    for dy in range(1, min(limit, h - 1) + 1):
        dy2 = np.float32(dy * dy)
        np.minimum(best[:-dy], g2[dy:] + dy2, out=best[:-dy])
        np.minimum(best[dy:], g2[:-dy] + dy2, out=best[dy:])
    return np.sqrt(best)


def dilate(region: np.ndarray, radius: int) -> np.ndarray:
    """Grow by a disk of ``radius`` px."""
    region = np.asarray(region, dtype=bool)
    if radius <= 0:
        return region.copy()
    return distance_to(region, radius) <= radius


def erode(region: np.ndarray, radius: int) -> np.ndarray:
    """Shrink by a disk of ``radius`` px (the image border does not count as outside)."""
    region = np.asarray(region, dtype=bool)
    if radius <= 0:
        return region.copy()
    return ~dilate(~region, radius)


def open_(region: np.ndarray, radius: int) -> np.ndarray:
    """Erode then dilate: drops specks smaller than the disk, keeps larger shapes' extent."""
    return dilate(erode(region, radius), radius)


def close(region: np.ndarray, radius: int) -> np.ndarray:
    """Dilate then erode: fills holes and gaps narrower than the disk."""
    return erode(dilate(region, radius), radius)


def feathered(region: np.ndarray, feather: int) -> np.ndarray:
    """Blend weight: 1 on ``region``, a smoothstep down to 0 over ``feather`` px outside, then 0 exactly."""
    region = np.asarray(region, dtype=bool)
    if feather <= 0 or not region.any():
        return region.astype(np.float32)
    d = distance_to(region, feather)
    t = np.clip(1.0 - d / np.float32(feather + 1), 0.0, 1.0)
    soft = (t * t * (3.0 - 2.0 * t)).astype(np.float32)
    soft[d > feather] = 0.0  # the guarantee: nothing beyond the band, whatever float rounding does
    soft[region] = 1.0
    return soft


# -- masks --------------------------------------------------------------------------------------


def mask_region(mask: Image.Image, size: tuple[int, int], grow: int = 0) -> np.ndarray:
    """The binary region a mask image stands for at ``size`` (width, height), grown or shrunk.

    Raises ``InvalidInput`` (field ``mask``) when nothing is left to edit, so the API layer can
    reject an all-black mask before any model work.
    """
    if mask.mode != "L":
        mask = mask.convert("L")
    if mask.size != tuple(size):
        mask = mask.resize(tuple(size), Image.Resampling.LANCZOS)  # as the reference's mask processor
    region = np.asarray(mask) >= MASK_THRESHOLD
    if not region.any():
        raise InvalidInput("mask is all black: nothing may change (white = may change, black = keep)", field="mask")
    if grow > 0:
        region = dilate(region, grow)
    elif grow < 0:
        region = erode(region, -grow)
        if not region.any():
            raise InvalidInput(
                f"mask is all black after shrinking by {-grow} px: nothing may change (use a smaller shrink)",
                field="mask",
            )
    return region


def prepare_edit_mask(mask: Image.Image, size: tuple[int, int], grow: int = 0, feather: int = 0) -> EditMask:
    """A user's mask image -> the region the edit may touch and the weight to composite with."""
    region = mask_region(mask, size, grow)
    return EditMask(binary=region, soft=feathered(region, feather))


# -- compositing --------------------------------------------------------------------------------


def _rgb_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def composite(original: Image.Image, edited: Image.Image, mask: EditMask) -> Image.Image:
    """``original * (1 - soft) + edited * soft``, with ``mask.keep`` pixels copied, not computed.

    Copying (rather than trusting ``x * 1.0 + y * 0.0`` to round back) is what makes "untouched
    pixels are bit-identical" a property of the code rather than of float arithmetic.
    """
    if original.size != edited.size:
        raise ValueError(f"composite needs images of one size, got {original.size} and {edited.size}")
    if mask.size != original.size:
        raise ValueError(f"composite needs a mask of the image's size {original.size}, got {mask.size}")
    o = _rgb_array(original)
    e = _rgb_array(edited)
    s = mask.soft[..., None]
    blended = np.rint(o * (1.0 - s) + e * s).clip(0, 255).astype(np.uint8)
    out = np.where(mask.keep[..., None], o, blended)
    return Image.fromarray(out, mode="RGB")


def restore_kept(original: Image.Image, edited: Image.Image, mask: EditMask) -> Image.Image:
    """Copy ``original`` wherever ``mask.keep``; leave everything else as it is.

    Unlike ``composite`` this is idempotent, so a caller (a session) can enforce the invariance on
    an engine's output that may or may not have been composited already.
    """
    if original.size != edited.size or mask.size != original.size:
        raise ValueError(f"restore_kept needs one size, got {original.size}, {edited.size} and mask {mask.size}")
    out = np.where(mask.keep[..., None], _rgb_array(original), _rgb_array(edited))
    return Image.fromarray(out, mode="RGB")


# -- preserve="auto": find what really changed ----------------------------------------------------


def _srgb_lut() -> np.ndarray:
    c = np.arange(256, dtype=np.float64) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


_SRGB_TO_LINEAR = _srgb_lut()
# linear sRGB -> XYZ (D65), rows pre-divided by the D65 white so the white point is (1, 1, 1)
_RGB_TO_XYZ_D65 = (
    np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
        dtype=np.float64,
    )
    / np.array([[0.95047], [1.0], [1.08883]])
).astype(np.float32)
_EPS = (6.0 / 29.0) ** 3


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) sRGB -> float32 (..., 3) CIELAB (D65): L in 0-100, one unit ≈ a just-noticeable step."""
    lin = _SRGB_TO_LINEAR[np.asarray(rgb, dtype=np.uint8)]
    xyz = lin @ _RGB_TO_XYZ_D65.T
    f = np.where(xyz > _EPS, np.cbrt(np.maximum(xyz, _EPS)), xyz / np.float32(3 * (6 / 29) ** 2) + np.float32(4 / 29))
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1).astype(np.float32)


def delta_e(original: Image.Image, edited: Image.Image, blur: float = PRESERVE_BLUR) -> np.ndarray:
    """Per-pixel CIE76 ΔE (Euclidean distance in CIELAB) after a light Gaussian blur of both images.

    CIE76 rather than CIEDE2000: it over-weights saturated colours a little, which only makes the
    detector more willing to call something changed (the safe side), at a fraction of the cost.
    """
    if original.size != edited.size:
        raise ValueError(f"delta_e needs images of one size, got {original.size} and {edited.size}")
    a, b = original.convert("RGB"), edited.convert("RGB")
    if blur > 0:
        a, b = a.filter(ImageFilter.GaussianBlur(blur)), b.filter(ImageFilter.GaussianBlur(blur))
    diff = srgb_to_lab(np.asarray(a)) - srgb_to_lab(np.asarray(b))
    return np.sqrt((diff * diff).sum(axis=-1))


def change_region(
    original: Image.Image,
    edited: Image.Image,
    threshold: float = 6.0,
    *,
    blur: float = PRESERVE_BLUR,
    speck: int = PRESERVE_SPECK,
    close_radius: int = PRESERVE_CLOSE,
    margin: int = PRESERVE_MARGIN,
) -> np.ndarray:
    """Bool (H, W): where ``edited`` really differs from ``original``, cleaned up and with a margin.

    ΔE above ``threshold`` after the blur, then an opening (drops drift specks and thin edge
    halos left by a global resample), a closing (fills a real change's holes), and a dilation by
    ``margin`` so the change's own anti-aliased edge is taken whole.
    """
    changed = delta_e(original, edited, blur) > threshold
    if speck > 0:
        changed = open_(changed, speck)
    if not changed.any():
        return changed
    if close_radius > 0:
        changed = close(changed, close_radius)
    return dilate(changed, margin)


def preserve_changes(
    original: Image.Image,
    edited: Image.Image,
    threshold: float = 6.0,
    *,
    blur: float = PRESERVE_BLUR,
    speck: int = PRESERVE_SPECK,
    close_radius: int = PRESERVE_CLOSE,
    margin: int = PRESERVE_MARGIN,
    feather: int = PRESERVE_FEATHER,
) -> tuple[Image.Image, np.ndarray]:
    """Keep only what the edit really changed; everything else is restored from ``original``.

    Returns the composited image and the change region (bool (H, W), before feathering). Where no
    change passes the threshold, the result is ``original`` byte for byte.
    """
    region = change_region(
        original, edited, threshold, blur=blur, speck=speck, close_radius=close_radius, margin=margin
    )
    return composite(original, edited, EditMask(binary=region, soft=feathered(region, feather))), region


# -- region boxes -------------------------------------------------------------------------------


def outline_width(size: tuple[int, int]) -> int:
    """Box outline thickness: visible to the model at any scale (~0.5% of the short side, >= 2 px)."""
    return max(2, round(min(size) / 200))


def validate_boxes(boxes: Sequence[Box], image_size: tuple[int, int]) -> None:
    """Each box lies inside the image and has a colour PIL can draw; ``InvalidInput`` names ``boxes[i]``."""
    w, h = image_size
    for i, box in enumerate(boxes):
        for name, value, limit, what in (("x1", box.x1, w, "width"), ("y1", box.y1, h, "height")):
            if value > limit:
                raise InvalidInput(
                    f"{name} must be <= the image {what} {limit}, got {value} "
                    f"(box {box.x0},{box.y0},{box.x1},{box.y1})",
                    field=f"boxes[{i}]",
                )
        try:
            ImageColor.getrgb(box.colour)
        except ValueError:
            raise InvalidInput(
                f"unknown colour {quote(box.colour)} (a name such as red, or #rrggbb)", field=f"boxes[{i}].colour"
            ) from None


def draw_boxes(image: Image.Image, boxes: Sequence[Box], width: int | None = None) -> Image.Image:
    """A copy of ``image`` with each box outlined in its colour, the outline inside the box's bounds."""
    out = image.convert("RGB")  # always a copy
    draw = ImageDraw.Draw(out)
    w = width if width is not None else outline_width(out.size)
    for box in boxes:
        draw.rectangle([box.x0, box.y0, box.x1 - 1, box.y1 - 1], outline=box.colour, width=w)
    return out


def boxes_mask(size: tuple[int, int], boxes: Sequence[Box], inset: int = 0) -> Image.Image:
    """Mode "L": white inside the boxes (outline area included when ``inset`` is 0), black elsewhere.

    ``inset`` shrinks every box by that many px per side (never below its centre pixel). Passing
    ``outline_width(size) + feather`` keeps the drawn outlines and the blend band inside them, so
    an output that reproduces the outlines still gets the original's pixels there.
    """
    mask = Image.new("L", tuple(size), 0)
    draw = ImageDraw.Draw(mask)
    for box in boxes:
        dx = min(inset, (box.x1 - box.x0 - 1) // 2)
        dy = min(inset, (box.y1 - box.y0 - 1) // 2)
        draw.rectangle([box.x0 + dx, box.y0 + dy, box.x1 - 1 - dx, box.y1 - 1 - dy], fill=255)
    return mask
