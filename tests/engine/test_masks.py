"""Pixel-space appearance editing: the invariance promises, checked the way a user would check them
(the bytes outside the edit compared with the input's)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from qedit import masks
from qedit.errors import InvalidInput
from qedit.params import Box


def scene(w: int = 320, h: int = 240, seed: int = 0) -> Image.Image:
    """A photo-like test image: gradients, grain, hard-edged shapes, text and a thin line."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w * 200 + 30, y / h * 180 + 40, (x + y) / (w + h) * 150 + 60], -1)
    base += rng.normal(0, 6, (h, w, 3))
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(image)
    d.ellipse([20, 20, 100, 100], fill=(240, 240, 30))
    d.rectangle([200, 30, 300, 80], fill=(10, 10, 10))
    d.text((30, 200), "HELLO qedit", fill=(255, 255, 255))
    d.line([0, 130, w - 1, 160], fill=(200, 0, 0), width=3)
    return image


def vae_like_drift(image: Image.Image, seed: int = 1) -> Image.Image:
    """What a VAE round-trip does to untouched areas: a 1 px blur, +-2 levels of noise, +1 overall."""
    rng = np.random.default_rng(seed)
    a = np.asarray(image.filter(ImageFilter.BoxBlur(1)), dtype=np.int16)
    a = a + rng.integers(-2, 3, a.shape) + 1
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def arr(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# -- morphology ---------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [1, 3, 7, 20])
def test_dilation_is_a_disk(r: int) -> None:
    region = np.zeros((61, 61), bool)
    region[30, 30] = True
    grown = masks.dilate(region, r)
    yy, xx = np.mgrid[-30:31, -30:31]
    assert np.array_equal(grown, xx**2 + yy**2 <= r * r)


def test_erosion_keeps_the_image_border_and_undoes_dilation_of_a_convex_shape() -> None:
    full = np.ones((20, 30), bool)
    assert masks.erode(full, 5).all()
    rect = np.zeros((60, 60), bool)
    rect[20:40, 15:45] = True
    assert np.array_equal(masks.erode(masks.dilate(rect, 4), 4), rect)


def test_distance_is_exact_within_the_limit() -> None:
    rng = np.random.default_rng(0)
    region = rng.random((40, 50)) > 0.995
    d = masks.distance_to(region, 12)
    pts = np.argwhere(region)
    yy, xx = np.mgrid[0:40, 0:50]
    brute = np.sqrt(((yy[..., None] - pts[:, 0]) ** 2 + (xx[..., None] - pts[:, 1]) ** 2).min(-1))
    near = brute <= 12
    assert np.allclose(d[near], brute[near], atol=1e-4)
    assert (d[~near] > 12).all()


# -- masks --------------------------------------------------------------------------------------


def test_binarisation_matches_the_reference_mask_processor() -> None:
    """The same mask image selects the same pixels as diffusers' inpaint mask processor, also when
    the mask's size differs from the image's (both resize with Lanczos, then cut at 0.5)."""
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(
        vae_scale_factor=16, vae_latent_channels=16, do_normalize=False, do_binarize=True, do_convert_grayscale=True
    )
    rng = np.random.default_rng(3)
    grey = Image.fromarray(rng.integers(0, 256, (24, 40), dtype=np.uint8)).resize((160, 96), Image.Resampling.NEAREST)
    for size in ((160, 96), (224, 128)):
        theirs = processor.preprocess(grey, height=size[1], width=size[0])[0, 0].numpy() > 0.5
        ours = masks.prepare_edit_mask(grey, size, grow=0, feather=0).binary
        assert np.array_equal(ours, theirs)
    ramp = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16))
    assert masks.prepare_edit_mask(ramp, (16, 16)).binary.sum() == 128  # 0-127 keep, 128-255 may change


def test_grow_and_shrink_move_the_edge_by_that_many_pixels() -> None:
    mask = Image.new("L", (200, 200), 0)
    ImageDraw.Draw(mask).rectangle([50, 60, 149, 139], fill=255)  # 100 x 80
    rows = lambda m: np.flatnonzero(m.binary.any(axis=1))  # noqa: E731
    cols = lambda m: np.flatnonzero(m.binary.any(axis=0))  # noqa: E731
    grown = masks.prepare_edit_mask(mask, (200, 200), grow=10)
    shrunk = masks.prepare_edit_mask(mask, (200, 200), grow=-10)
    assert (cols(grown)[0], cols(grown)[-1], rows(grown)[0], rows(grown)[-1]) == (40, 159, 50, 149)
    assert (cols(shrunk)[0], cols(shrunk)[-1], rows(shrunk)[0], rows(shrunk)[-1]) == (60, 139, 70, 129)


def test_feather_band_lies_outside_the_mask_and_ends_exactly() -> None:
    mask = Image.new("L", (120, 100), 0)
    ImageDraw.Draw(mask).ellipse([30, 20, 90, 80], fill=255)
    em = masks.prepare_edit_mask(mask, (120, 100), grow=0, feather=6)
    band = masks.dilate(em.binary, 6) & ~em.binary
    assert (em.soft[em.binary] == 1).all()
    assert ((em.soft[band] > 0) & (em.soft[band] < 1)).all()
    assert np.array_equal(em.keep, ~masks.dilate(em.binary, 6))
    assert em.soft.dtype == np.float32 and em.size == (120, 100)


def test_mask_of_another_size_is_resized_to_the_image() -> None:
    small = Image.new("L", (10, 10), 0)
    ImageDraw.Draw(small).rectangle([0, 0, 4, 9], fill=255)  # left half
    em = masks.prepare_edit_mask(small, (200, 100), feather=0)
    assert em.binary.shape == (100, 200)
    assert em.binary[:, :95].all() and not em.binary[:, 105:].any()


def test_all_black_mask_is_refused() -> None:
    with pytest.raises(InvalidInput, match="all black") as e:
        masks.prepare_edit_mask(Image.new("L", (64, 64), 127), (64, 64))
    assert e.value.field == "mask"
    dot = Image.new("L", (64, 64), 0)
    dot.putpixel((30, 30), 255)
    with pytest.raises(InvalidInput, match="after shrinking by 3 px"):
        masks.prepare_edit_mask(dot, (64, 64), grow=-3)


# -- compositing --------------------------------------------------------------------------------


def test_composite_keeps_every_pixel_outside_the_feathered_mask_bit_identical() -> None:
    original = scene()
    edited = vae_like_drift(original)
    ImageDraw.Draw(edited).ellipse([120, 60, 200, 140], fill=(255, 0, 255))
    mask = Image.new("L", original.size, 0)
    ImageDraw.Draw(mask).ellipse([120, 60, 200, 140], fill=255)
    em = masks.prepare_edit_mask(mask, original.size, grow=3, feather=5)
    out = masks.composite(original, edited, em)
    o, e, r = arr(original), arr(edited), arr(out)
    assert np.abs(r - o)[em.keep].max() == 0  # the promise
    assert np.array_equal(r[em.binary], e[em.binary])  # the edit itself, untouched
    assert np.abs(e - o)[em.keep].max() > 0  # without compositing the drift would be there
    assert out.mode == "RGB" and out.size == original.size


def test_composite_refuses_mismatched_sizes() -> None:
    em = masks.prepare_edit_mask(Image.new("L", (32, 32), 255), (32, 32))
    with pytest.raises(ValueError, match="one size"):
        masks.composite(Image.new("RGB", (32, 32)), Image.new("RGB", (32, 30)), em)
    with pytest.raises(ValueError, match="mask"):
        masks.composite(Image.new("RGB", (30, 32)), Image.new("RGB", (30, 32)), em)


def test_restore_kept_is_idempotent_after_composite() -> None:
    original, edited = scene(), vae_like_drift(scene())
    mask = Image.new("L", original.size, 0)
    ImageDraw.Draw(mask).rectangle([40, 40, 120, 120], fill=255)
    em = masks.prepare_edit_mask(mask, original.size, feather=4)
    once = masks.composite(original, edited, em)
    assert np.array_equal(arr(masks.restore_kept(original, once, em)), arr(once))


# -- preserve -----------------------------------------------------------------------------------


def test_srgb_to_lab_known_values() -> None:
    lab = masks.srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [128, 128, 128]], np.uint8))
    assert np.allclose(lab[0], [100, 0, 0], atol=0.05)
    assert np.allclose(lab[1], [0, 0, 0], atol=0.05)
    assert np.allclose(lab[2], [53.24, 80.09, 67.20], atol=0.05)
    assert np.allclose(lab[3], [53.59, 0, 0], atol=0.05)


def test_preserve_restores_drift_and_keeps_the_real_change() -> None:
    original = scene()
    edited = vae_like_drift(original)
    ImageDraw.Draw(edited).rectangle([120, 90, 179, 139], fill=(0, 90, 255))  # the actual edit, 60 x 50
    change = np.zeros((240, 320), bool)
    change[90:140, 120:180] = True
    out, region = masks.preserve_changes(original, edited, threshold=6.0)
    o, e, r = arr(original), arr(edited), arr(out)
    band = masks.dilate(change, 20)
    assert np.abs(r - o)[~band].max() == 0  # drift gone outside the change's band
    assert np.array_equal(r[change], e[change])  # the edit kept whole
    assert region[change].all() and not region[~band].any()
    assert np.abs(e - o)[~band].max() > 50  # what leaks without preserve (edges blurred by the drift)


def test_preserve_without_a_real_change_returns_the_original_bytes() -> None:
    original = scene()
    out, region = masks.preserve_changes(original, vae_like_drift(original), threshold=6.0)
    assert not region.any()
    assert np.array_equal(arr(out), arr(original))


# -- boxes --------------------------------------------------------------------------------------


def test_validate_boxes_names_the_box_the_limit_and_the_value() -> None:
    boxes = (Box(x0=0, y0=0, x1=10, y1=10), Box(x0=5, y0=5, x1=330, y1=20))
    with pytest.raises(InvalidInput) as e:
        masks.validate_boxes(boxes, (320, 240))
    assert e.value.field == "boxes[1]"
    assert "320" in str(e.value) and "330" in str(e.value)
    with pytest.raises(InvalidInput, match="height 240, got 241"):
        masks.validate_boxes((Box(x0=0, y0=0, x1=10, y1=241),), (320, 240))
    with pytest.raises(InvalidInput) as e:
        masks.validate_boxes((Box(x0=0, y0=0, x1=10, y1=10, colour="blurple"),), (320, 240))
    assert e.value.field == "boxes[0].colour"
    masks.validate_boxes((Box(x0=0, y0=0, x1=320, y1=240, colour="#00ff00"),), (320, 240))


def test_draw_boxes_outlines_inside_each_box_on_a_copy() -> None:
    image = Image.new("RGB", (400, 300), (128, 128, 128))
    boxes = (Box(x0=10, y0=20, x1=110, y1=90, colour="red"), Box(x0=200, y0=100, x1=300, y1=250, colour="#0000ff"))
    drawn = masks.draw_boxes(image, boxes)
    assert image.getpixel((10, 20)) == (128, 128, 128)  # input untouched
    width = masks.outline_width(image.size)
    assert width == 2
    a = np.asarray(drawn)
    assert tuple(a[20, 10]) == (255, 0, 0) and tuple(a[89, 109]) == (255, 0, 0)
    assert tuple(a[20 + width, 10 + width]) == (128, 128, 128)  # interior not filled
    assert tuple(a[100, 299]) == (0, 0, 255)
    outside = ~np.asarray(masks.boxes_mask(image.size, boxes), bool)
    assert (a[outside] == 128).all()  # nothing drawn outside the boxes
    assert masks.outline_width((2000, 1600)) == 8


def test_box_mask_edit_leaves_the_outside_the_original_with_no_outline() -> None:
    """--box-mask: the model sees outlines, drifts everywhere; outside the boxes the output is the input."""
    original = scene()
    boxes = (Box(x0=40, y0=40, x1=140, y1=120),)
    model_output = vae_like_drift(masks.draw_boxes(original, boxes))  # a model that copies the outlines
    ImageDraw.Draw(model_output).rectangle([60, 60, 119, 99], fill=(0, 255, 0))
    em = masks.prepare_edit_mask(masks.boxes_mask(original.size, boxes), original.size, feather=4)
    out = arr(masks.composite(original, model_output, em))
    inside_box = np.zeros((240, 320), bool)
    inside_box[40:120, 40:140] = True
    beyond = ~masks.dilate(inside_box, 4)
    assert np.array_equal(out[beyond], arr(original)[beyond])
    assert (out[60:100, 60:120] == [0, 255, 0]).all()
    # with the inset the outline strip is restored too
    inset = masks.outline_width(original.size) + 4
    em2 = masks.prepare_edit_mask(masks.boxes_mask(original.size, boxes, inset=inset), original.size, feather=4)
    out2 = arr(masks.composite(original, model_output, em2))
    strip = inside_box & ~masks.erode(inside_box, masks.outline_width(original.size))  # where outlines were drawn
    assert not (out2 == [255, 0, 0]).all(-1).any()  # no outline pixel survives
    assert np.array_equal(out2[strip | beyond], arr(original)[strip | beyond])
    assert (out2[60:100, 60:120] == [0, 255, 0]).all()
