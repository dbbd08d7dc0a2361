"""Working geometry: the exact fit puts every edge back on the same pixel, and the reference fit
reproduces diffusers' sizes (and its aspect stretch)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from qedit.engine.geometry import plan, reference_dimensions
from qedit.engine.specs import MP

SIZES = [(1920, 1080), (1080, 1920), (1000, 1000), (640, 480), (333, 777), (3000, 400), (257, 1531)]


def _grid(size: tuple[int, int]) -> tuple[Image.Image, list[int], list[int]]:
    """Dark 3-px lines on white at known positions, away from the borders."""
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    xs = [int(w * f) for f in (0.13, 0.37, 0.61, 0.87)]
    ys = [int(h * f) for f in (0.11, 0.42, 0.58, 0.89)]
    for x in xs:
        d.rectangle([x - 1, 0, x + 1, h - 1], fill="black")
    for y in ys:
        d.rectangle([0, y - 1, w - 1, y + 1], fill="black")
    return img, xs, ys


def _line_centres(img: Image.Image, positions: list[int], axis: int) -> list[float]:
    """Centroid of darkness in a +-6 px window around each expected line, along ``axis``."""
    dark = 255.0 - np.asarray(img.convert("L"), dtype=np.float64)
    profile = dark.mean(axis=axis)  # axis=0 -> per column (x), axis=1 -> per row (y)
    profile = profile - np.median(profile)
    centres = []
    for p in positions:
        lo, hi = max(0, p - 6), min(len(profile), p + 7)
        window = np.clip(profile[lo:hi], 0, None)
        centres.append(float((window * np.arange(lo, hi)).sum() / window.sum()))
    return centres


def _max_offset(size: tuple[int, int], fit: str) -> float:
    img, xs, ys = _grid(size)
    g = plan(size, MP, fit)  # type: ignore[arg-type]
    back = g.to_source(g.to_working(img))  # a model that returns its input unchanged
    assert back.size == size
    ox = np.abs(np.array(_line_centres(back, xs, 0)) - np.array(_line_centres(img, xs, 0)))
    oy = np.abs(np.array(_line_centres(back, ys, 1)) - np.array(_line_centres(img, ys, 1)))
    return float(max(ox.max(), oy.max()))


@pytest.mark.parametrize("size", SIZES)
def test_exact_fit_round_trip_puts_every_edge_back(size: tuple[int, int]) -> None:
    g = plan(size, MP, "exact")
    assert g.exact, "canvas and working size must have the same aspect: one uniform scale"
    assert g.working[0] % 16 == 0 and g.working[1] % 16 == 0
    assert g.canvas[0] >= size[0] and g.canvas[1] >= size[1]
    assert abs(g.working[0] * g.working[1] - MP) <= 0.12 * MP
    assert round(_max_offset(size, "exact")) == 0


def test_reference_fit_matches_diffusers_and_stretches() -> None:
    assert reference_dimensions(MP, 1920 / 1080) == (1376, 768)
    assert reference_dimensions(MP, 1.0) == (1024, 1024)
    g = plan((1920, 1080), MP, "reference")
    assert g.working == (1376, 768)
    sx, sy = g.scale
    assert round(sx, 4) == 0.7167 and round(sy, 4) == 0.7111  # the aspect stretch users see
    assert not g.exact
    # the exact fit for the same image has one scale for both axes
    e = plan((1920, 1080), MP, "exact")
    assert e.scale[0] == pytest.approx(e.scale[1], abs=1e-12)


def test_exact_fit_pads_little() -> None:
    for size in SIZES:
        g = plan(size, MP, "exact")
        assert g.canvas[0] * g.canvas[1] <= 1.02 * size[0] * size[1], (size, g)


def test_forced_working_size_is_floored_to_16() -> None:
    g = plan((640, 480), MP, "reference", working=(650, 490))
    assert g.working == (640, 480)
