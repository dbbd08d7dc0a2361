"""Working sizes: where the model's canvas sits on the user's image, and the exact way back.

Used by stage 3 (``preprocess``: the image onto the working canvas) and stage 7 (``postprocess``:
the output back onto the image).

The reference resizes every input to ~1 MP with width and height each rounded to a multiple of 32
on its own, which stretches the aspect ratio (1920x1080 -> 1376x768: x0.7167 across, x0.7111 down);
no resize back can then put the edges where they were, and users see the edit shift and zoom.

``fit="exact"`` (qedit's default) instead pads the image, by edge replication on the right and
bottom, to a canvas whose aspect is exactly the working size's, so a single uniform scale maps
canvas to working size and back: every edge returns to the same pixel, and the padding is cropped
away. ``fit="reference"`` reproduces the reference's stretch, for parity with diffusers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

Fit = Literal["exact", "reference"]
RESAMPLE = Image.Resampling.LANCZOS  # diffusers' VaeImageProcessor default ("lanczos")
MULTIPLE = 32  # the reference's rounding of computed sizes
LATENT_MULTIPLE = 16  # VAE 8x times 2x2 packing: the smallest size step the transformer accepts


def reference_dimensions(area: int, ratio: float) -> tuple[int, int]:
    """diffusers' ``calculate_dimensions``: (width, height) near ``area``, each rounded to 32."""
    width = math.sqrt(area * ratio)
    height = width / ratio
    return round(width / MULTIPLE) * MULTIPLE, round(height / MULTIPLE) * MULTIPLE


@dataclass(frozen=True)
class Geometry:
    """How an image of ``source`` size maps onto the model's ``working`` size.

    The source sits at the top-left of a ``canvas`` (>= source; the rest is edge padding) whose
    aspect equals the working size's exactly, or, for the reference fit, canvas == source and the
    map stretches.
    """

    source: tuple[int, int]
    canvas: tuple[int, int]
    working: tuple[int, int]

    @property
    def scale(self) -> tuple[float, float]:
        return self.working[0] / self.canvas[0], self.working[1] / self.canvas[1]

    @property
    def exact(self) -> bool:
        return self.canvas[0] * self.working[1] == self.canvas[1] * self.working[0]

    def to_working(self, image: Image.Image) -> Image.Image:
        """Source image -> the model's input at the working size."""
        if image.size != self.source:
            raise ValueError(f"image is {image.size}, geometry expects {self.source}")
        return resize(pad_to(image, self.canvas), self.working)

    def to_source(self, image: Image.Image) -> Image.Image:
        """The model's output at the working size -> exactly the source's field of view and size."""
        if image.size != self.working:
            raise ValueError(f"image is {image.size}, geometry expects {self.working}")
        return resize(image, self.canvas).crop((0, 0, *self.source))


def plan(source: tuple[int, int], area: int, fit: Fit = "exact", working: tuple[int, int] | None = None) -> Geometry:
    """The geometry for an image of ``source`` size at about ``area`` working pixels.

    ``working`` forces the working size (the reference's explicit height/width, floored to 16).
    """
    if working is not None:
        w, h = (max(LATENT_MULTIPLE, v // LATENT_MULTIPLE * LATENT_MULTIPLE) for v in working)
        if fit == "reference":
            return Geometry(source, source, (w, h))
        return Geometry(source, _canvas_for(source, (w, h)), (w, h))
    if fit == "reference":
        return Geometry(source, source, reference_dimensions(area, source[0] / source[1]))
    return _exact_plan(source, area)


def _canvas_for(source: tuple[int, int], working: tuple[int, int]) -> tuple[int, int]:
    """The smallest canvas >= source with exactly the working aspect (integer multiples of it)."""
    g = math.gcd(*working)
    a, b = working[0] // g, working[1] // g
    k = max(-(-source[0] // a), -(-source[1] // b))
    return k * a, k * b


def _exact_plan(source: tuple[int, int], area: int) -> Geometry:
    """Among working sizes (multiples of 16) near ``area``, the one needing the least padding."""
    w_src, h_src = source
    ratio = w_src / h_src
    w0, h0 = reference_dimensions(area, ratio)
    best: tuple[float, float, Geometry] | None = None
    step = LATENT_MULTIPLE
    for w in range(max(step, w0 - 4 * step), w0 + 4 * step + 1, step):
        for h in range(max(step, h0 - 4 * step), h0 + 4 * step + 1, step):
            if abs(w * h - area) > 0.12 * area:
                continue
            canvas = _canvas_for(source, (w, h))
            padding = canvas[0] * canvas[1] / (w_src * h_src) - 1.0
            key = (round(padding, 4), abs(w * h - area) / area)
            if best is None or key < best[:2]:
                best = (*key, Geometry(source, canvas, (w, h)))
    if best is None:  # extreme aspect ratios at small areas: no grid size is near ``area``; take the reference's
        size = (max(step, w0), max(step, h0))
        return Geometry(source, _canvas_for(source, size), size)
    return best[2]


def pad_to(image: Image.Image, canvas: tuple[int, int]) -> Image.Image:
    """Extend right and bottom by repeating the last column/row (no hard edge for the model to see)."""
    if image.size == canvas:
        return image
    arr = np.asarray(image)
    pad_w, pad_h = canvas[0] - image.size[0], canvas[1] - image.size[1]
    widths = ((0, pad_h), (0, pad_w)) + ((0, 0),) * (arr.ndim - 2)
    return Image.fromarray(np.pad(arr, widths, mode="edge"), mode=image.mode)


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """PIL Lanczos, as diffusers' image processor; returns a copy when the size already matches."""
    return image.resize(size, resample=RESAMPLE)


def round_trip_offset(size: tuple[int, int], area: int, fit: Fit = "exact") -> float:
    """Largest displacement (px) of an edge after input -> working size -> input, as a model that
    returns its input unchanged would give: the figure that says whether an edit shifts or zooms.

    The probe is a grid of dark 3-px lines at known positions; each line's centre is located as the
    centroid of darkness in a +-6 px window, before and after the round trip."""
    w, h = size
    probe = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(probe)
    xs = [int(w * f) for f in (0.13, 0.37, 0.61, 0.87)]
    ys = [int(h * f) for f in (0.11, 0.42, 0.58, 0.89)]
    for x in xs:
        draw.rectangle([x - 1, 0, x + 1, h - 1], fill="black")
    for y in ys:
        draw.rectangle([0, y - 1, w - 1, y + 1], fill="black")
    g = plan(size, area, fit)
    back = g.to_source(g.to_working(probe))
    if back.size != size:
        return math.inf
    offsets = [
        abs(a - b)
        for positions, axis in ((xs, 0), (ys, 1))
        for a, b in zip(_line_centres(back, positions, axis), _line_centres(probe, positions, axis), strict=True)
    ]
    return max(offsets)


def _line_centres(image: Image.Image, positions: list[int], axis: int) -> list[float]:
    dark = 255.0 - np.asarray(image.convert("L"), dtype=np.float64)
    profile = dark.mean(axis=axis)  # axis 0: per column (x); axis 1: per row (y)
    profile = profile - np.median(profile)
    centres = []
    for p in positions:
        lo, hi = max(0, p - 6), min(len(profile), p + 7)
        window = np.clip(profile[lo:hi], 0, None)
        centres.append(float((window * np.arange(lo, hi)).sum() / window.sum()))
    return centres
