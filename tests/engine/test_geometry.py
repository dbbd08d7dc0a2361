"""Working geometry: the exact fit puts every edge back on the same pixel, and the reference fit
reproduces diffusers' sizes (and its aspect stretch)."""

from __future__ import annotations

import pytest

from qedit.engine.geometry import _line_centres, plan, reference_dimensions, round_trip_offset
from qedit.models.specs import MP

SIZES = [(1920, 1080), (1080, 1920), (1000, 1000), (640, 480), (333, 777), (3000, 400), (257, 1531)]


@pytest.mark.parametrize("size", SIZES)
def test_exact_fit_round_trip_puts_every_edge_back(size: tuple[int, int]) -> None:
    g = plan(size, MP, "exact")
    assert g.exact, "canvas and working size must have the same aspect: one uniform scale"
    assert g.working[0] % 16 == 0 and g.working[1] % 16 == 0
    assert g.canvas[0] >= size[0] and g.canvas[1] >= size[1]
    assert abs(g.working[0] * g.working[1] - MP) <= 0.12 * MP
    assert round(round_trip_offset(size, MP, "exact")) == 0


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


def test_the_offset_probe_sees_a_two_pixel_shift() -> None:
    """The measurement itself can fail: a grid moved by 2 px reads as 2 px."""
    from PIL import Image, ImageChops, ImageDraw

    img = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(img).rectangle([99, 0, 101, 299], fill="black")
    moved = ImageChops.offset(img, 2, 0)
    assert _line_centres(moved, [100], 0)[0] - _line_centres(img, [100], 0)[0] == pytest.approx(2.0, abs=0.01)


@pytest.mark.parametrize("size", [(3, 500), (500, 3), (100, 3000), (1, 1)])
def test_extreme_aspects_at_a_small_working_area_still_get_a_plan(size: tuple[int, int]) -> None:
    """The tiny presets' 64x64 area has no 16-multiple size near it for 3x500 (was an AssertionError)."""
    g = plan(size, 64 * 64, "exact")
    assert g.working[0] % 16 == 0 and g.working[1] % 16 == 0
    assert g.canvas[0] >= size[0] and g.canvas[1] >= size[1]
