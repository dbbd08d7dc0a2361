"""Every input class a user may bring decodes to the RGB the model should see; every bad file is one
clear line; every output format carries its metadata back out; writes are atomic."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from qedit import imageio
from qedit.errors import InvalidInput
from tests.support import images as I


def close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 6) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


# -- plain formats -----------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [I.jpeg, I.png, I.webp, I.bmp, I.tiff], ids=["jpg", "png", "webp", "bmp", "tiff"])
def test_common_formats_decode_to_the_same_rgb(make, tmp_path: Path) -> None:
    expected = np.asarray(I.pattern(), dtype=int)
    data = make()
    for source in (data, tmp_path / "in.img", str(tmp_path / "in.img")):
        (tmp_path / "in.img").write_bytes(data)
        im = imageio.load_image(source)
        assert im.mode == "RGB" and im.size == (64, 48)
        diff = np.abs(np.asarray(im, dtype=int) - expected)
        if make is I.jpeg:
            assert diff.mean() < 2  # lossy, chroma-subsampled: close on average
        else:
            assert diff.max() == 0


def test_supported_extensions_cover_the_documented_list() -> None:
    assert set(imageio.SUPPORTED_EXTENSIONS) == {"jpg", "jpeg", "png", "webp", "bmp", "tiff", "tif"}
    assert imageio.is_supported_name("A.JPG") and imageio.is_supported_name("b.tif")
    assert not imageio.is_supported_name("c.gif") and not imageio.is_supported_name("notes.txt")


def test_format_is_sniffed_from_the_bytes_not_the_name(tmp_path: Path) -> None:
    disguised = tmp_path / "photo.png"
    disguised.write_bytes(I.gif())
    with pytest.raises(InvalidInput, match="unsupported format GIF; allowed: jpg, jpeg, png, webp, bmp, tiff"):
        imageio.load_image(disguised)
    misnamed = tmp_path / "photo.jpg"
    misnamed.write_bytes(I.png())
    assert imageio.sniff_format(misnamed) == "png"
    assert imageio.load_image(misnamed).size == (64, 48)


# -- bit depths and colour modes -----------------------------------------------------------------------


@pytest.mark.parametrize("make", [I.png16_gray, I.tiff16_gray], ids=["png16", "tiff16"])
def test_16_bit_grey_is_scaled_not_clipped(make) -> None:
    im = imageio.load_image(make())
    a = np.asarray(im, dtype=int)
    assert im.mode == "RGB"
    ramp = a[0, :, 0]
    assert ramp[0] == 0 and ramp[-1] == 255  # the full 0-65535 range maps onto 0-255
    assert abs(ramp[len(ramp) // 2] - 128) <= 3  # the middle stays mid-grey (clipping would make it 255)
    assert np.all(np.diff(ramp) >= 0)
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])


def test_48_bit_rgb_tiff() -> None:
    im = imageio.load_image(I.tiff48_rgb(colour16=(65535, 32896, 0)))
    assert im.mode == "RGB" and im.size == (16, 8)
    assert close(im.getpixel((3, 3)), (255, 128, 0), tol=1)


def test_grey_and_bilevel_become_rgb() -> None:
    g = imageio.load_image(I.gray_png(128))
    assert g.mode == "RGB" and g.getpixel((5, 5)) == (128, 128, 128)
    b = imageio.load_image(I.bilevel_png())
    assert b.getpixel((0, 0)) == (0, 0, 0) and b.getpixel((31, 0)) == (255, 255, 255)


def test_cmyk_jpeg_becomes_rgb() -> None:
    im = imageio.load_image(I.cmyk_jpeg((0, 255, 255, 0)))
    assert im.mode == "RGB"
    assert close(im.getpixel((10, 10)), (255, 0, 0), tol=12)


def test_cmyk_with_an_unusable_profile_falls_back_instead_of_failing() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # an RGB profile on CMYK data
    im = imageio.load_image(I.cmyk_jpeg((0, 255, 255, 0), icc_profile=srgb))
    assert close(im.getpixel((10, 10)), (255, 0, 0), tol=12)


def test_cmyk_profile_is_used_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CMYK profile ships with the test machine, so check that the embedded one is what gets used."""
    seen: list[bytes] = []

    def fake(image, src, dst, outputMode):
        seen.append(src.tobytes())
        return Image.new("RGB", image.size, (1, 2, 3))

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    monkeypatch.setattr(ImageCms, "profileToProfile", fake)
    im = imageio.load_image(I.cmyk_jpeg(icc_profile=icc))
    assert seen and im.getpixel((0, 0)) == (1, 2, 3)


def test_palette_transparency_is_flattened_on_white() -> None:
    im = imageio.load_image(I.palette_transparent_png())
    assert im.mode == "RGB"
    assert im.getpixel((2, 2)) == (255, 255, 255)  # transparent index 0 (black underneath) -> white
    assert im.getpixel((30, 2)) == I.BLUE


def test_rgba_is_flattened_on_white_not_on_the_hidden_colour() -> None:
    im = imageio.load_image(I.rgba_png())
    assert im.getpixel((2, 2)) == (255, 255, 255)  # transparent black underneath
    assert im.getpixel((30, 2)) == I.GREEN


def test_half_transparent_pixels_blend_with_white() -> None:
    data = I.encode(Image.new("RGBA", (8, 8), (0, 0, 0, 128)), "PNG")
    assert close(imageio.load_image(data).getpixel((0, 0)), (127, 127, 127), tol=1)


def test_exif_orientation_is_applied() -> None:
    raw = Image.open(io.BytesIO(I.exif_rotated_jpeg((64, 32))))
    assert raw.size == (64, 32)
    im = imageio.load_image(I.exif_rotated_jpeg((64, 32)))
    assert im.size == (32, 64)  # portrait, as a viewer shows it
    # the stored top-left (red) corner ends top-right after a quarter turn clockwise
    assert close(im.getpixel((im.width - 2, 1)), I.RED, tol=20)
    assert not close(im.getpixel((1, 1)), I.RED, tol=60)


# -- broken input: one line, the field named ----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (I.truncated_jpeg(), "cannot read image: file is truncated"),
        (I.truncated_png(), "cannot read image: file is truncated"),
        (I.random_bytes(), "cannot read image: not an image file"),
        (I.gif(), "unsupported format GIF; allowed: jpg, jpeg, png, webp, bmp, tiff"),
        (b"", "image is empty (0 bytes)"),
        (I.bomb_png_header(), "image is too large"),
    ],
    ids=["truncated-jpeg", "truncated-png", "random", "gif", "empty", "bomb"],
)
def test_bad_bytes_raise_one_line_invalid_input(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        imageio.load_image(data, field="image[1]")
    assert e.value.field == "image[1]"
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_path_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"no such file: .*x\.png") as e:
        imageio.load_image(tmp_path / "x.png")
    assert e.value.field == "image"
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InvalidInput, match="is empty"):
        imageio.load_image(tmp_path / "empty.png")
    with pytest.raises(InvalidInput, match="is a directory"):
        imageio.load_image(tmp_path)


def test_bomb_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imageio, "MAX_PIXELS", 1000)
    with pytest.raises(InvalidInput, match="too large: 64x48"):
        imageio.load_image(I.png())


# -- masks -------------------------------------------------------------------------------------------


def test_mask_from_luminance() -> None:
    im = Image.new("RGB", (20, 10), (0, 0, 0))
    im.paste((255, 255, 255), (10, 0, 20, 10))
    m = imageio.load_mask(I.encode(im, "PNG"))
    assert m.mode == "L" and m.getpixel((2, 2)) == 0 and m.getpixel((15, 2)) == 255


def test_mask_from_alpha_transparent_means_edit() -> None:
    m = imageio.load_mask(I.alpha_mask_png((32, 32)))
    assert m.mode == "L"
    assert m.getpixel((2, 2)) == 0  # opaque -> keep
    assert m.getpixel((30, 2)) == 255  # transparent -> may change


def test_mask_with_constant_alpha_uses_luminance() -> None:
    im = Image.new("RGBA", (20, 10), (0, 0, 0, 255))
    im.paste((255, 255, 255, 255), (10, 0, 20, 10))
    m = imageio.load_mask(I.encode(im, "PNG"))
    assert m.getpixel((2, 2)) == 0 and m.getpixel((15, 2)) == 255


def test_mask_is_resized_bilinearly() -> None:
    m = imageio.load_mask(I.alpha_mask_png((32, 32)), size=(64, 16))
    assert m.size == (64, 16) and m.mode == "L"
    row = [m.getpixel((x, 8)) for x in range(64)]
    assert row[0] == 0 and row[-1] == 255
    assert any(0 < v < 255 for v in row)  # a soft transition, not nearest-neighbour


def test_mask_errors_name_the_mask_field() -> None:
    with pytest.raises(InvalidInput) as e:
        imageio.load_mask(I.gif())
    assert e.value.field == "mask"


def test_16_bit_mask() -> None:
    m = imageio.load_mask(I.png16_gray())
    assert m.mode == "L" and m.getpixel((0, 0)) == 0 and m.getpixel((63, 0)) == 255


# -- output and metadata -------------------------------------------------------------------------------

META = {
    "prompt": "把招牌上的字改成“开业大吉” & <keep> the rest",
    "negative_prompt": "blurry",
    "seed": "42",
    "steps": "20",
    "cfg": "4",
    "size": "64x48",
    "model": "tiny",
    "params": '{"prompt": "x", "seed": 42}',
}


@pytest.mark.parametrize("fmt", ["png", "jpeg", "jpg", "webp"])
def test_metadata_round_trip(fmt: str, tmp_path: Path) -> None:
    data = imageio.encode_image(I.pattern(), fmt, META)
    assert imageio.read_metadata(data) == META
    assert imageio.sniff_format(data) == ("jpeg" if fmt == "jpg" else fmt)
    path = imageio.save_image(I.pattern(), tmp_path / f"out.{fmt}", metadata=META)
    assert imageio.read_metadata(path) == META
    assert imageio.load_image(path).size == (64, 48)


def test_png_has_readable_parameters_text() -> None:
    text = Image.open(io.BytesIO(imageio.encode_image(I.pattern(), "png", META))).text
    assert text["parameters"].splitlines()[0] == META["prompt"]
    assert "Seed: 42" in text["parameters"] and "Negative prompt: blurry" in text["parameters"]


def test_no_metadata_reads_back_empty() -> None:
    for fmt in ("png", "jpeg", "webp"):
        assert imageio.read_metadata(imageio.encode_image(I.pattern(), fmt, None)) == {}
    assert imageio.read_metadata(I.jpeg()) == {}


def test_outputs_are_faithful() -> None:
    src = np.asarray(I.pattern(), dtype=int)
    png = np.asarray(imageio.load_image(imageio.encode_image(I.pattern(), "png")), dtype=int)
    assert np.array_equal(png, src)
    lossless = imageio.encode_image(I.pattern(), "webp", lossless=True)
    assert np.array_equal(np.asarray(imageio.load_image(lossless), dtype=int), src)
    jpg = np.asarray(imageio.load_image(imageio.encode_image(I.pattern(), "jpeg")), dtype=int)
    assert np.abs(jpg - src).mean() < 2  # quality 95


def test_jpeg_of_rgba_is_flattened_on_white() -> None:
    im = Image.open(io.BytesIO(I.rgba_png())).convert("RGBA")
    for fmt in ("jpeg",):
        out = Image.open(io.BytesIO(imageio.encode_image(im, fmt)))
        assert out.mode == "RGB" and close(out.getpixel((2, 2)), (255, 255, 255))


def test_oversized_chain_is_dropped_from_jpeg_not_the_edit() -> None:
    meta = {**META, "chain": "[" + ", ".join(['{"prompt": "' + "x" * 500 + '"}'] * 200) + "]"}
    back = imageio.read_metadata(imageio.encode_image(I.pattern(), "jpeg", meta))
    assert back["prompt"] == META["prompt"] and back["seed"] == "42"
    assert "chain" not in back and back["chain_truncated"] == "true"
    assert imageio.read_metadata(imageio.encode_image(I.pattern(), "png", meta))["chain"] == meta["chain"]


def test_save_picks_the_format_from_the_extension(tmp_path: Path) -> None:
    for name, fmt in (("a.png", "png"), ("b.JPG", "jpeg"), ("c.jpeg", "jpeg"), ("d.webp", "webp")):
        assert imageio.sniff_format(imageio.save_image(I.pattern(), tmp_path / name)) == fmt
    assert imageio.sniff_format(imageio.save_image(I.pattern(), tmp_path / "e.png", fmt="jpeg")) == "jpeg"


def test_save_rejects_unknown_extension_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"extension \.gif; use \.png, \.jpg, \.jpeg or \.webp") as e:
        imageio.save_image(I.pattern(), tmp_path / "out.gif")
    assert e.value.field == "output"
    with pytest.raises(InvalidInput, match="no extension"):
        imageio.save_image(I.pattern(), tmp_path / "out")
    with pytest.raises(InvalidInput, match="unknown output format 'gif'"):
        imageio.save_image(I.pattern(), tmp_path / "out.png", fmt="gif")
    with pytest.raises(InvalidInput, match="does not exist"):
        imageio.save_image(I.pattern(), tmp_path / "nope" / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_save_leaves_neither_temp_nor_partial_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "out.png"
    imageio.save_image(I.pattern(seed=1), target)
    before = target.read_bytes()

    def boom(fd: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C between writing and renaming

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        imageio.save_image(I.pattern(seed=2), target)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temp left behind
    assert target.read_bytes() == before  # the old complete file, untouched


def test_write_error_is_one_line_and_cleans_up(tmp_path: Path, monkeypatch) -> None:
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(InvalidInput, match="No space left on device") as e:
        imageio.save_image(I.pattern(), tmp_path / "out.webp")
    assert e.value.field == "output"
    assert list(tmp_path.iterdir()) == []


def test_saved_file_has_normal_permissions(tmp_path: Path) -> None:
    path = imageio.save_image(I.pattern(), tmp_path / "out.png")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_shipped_examples_are_valid_inputs() -> None:
    """The README's first command edits examples/shop.png; the demo pictures must stay small, valid inputs."""
    root = Path(__file__).resolve().parents[1] / "examples"
    pictures = sorted(p for p in root.iterdir() if imageio.is_supported_name(p))
    assert {p.name for p in pictures} >= {"shop.png", "poster.jpg", "product.png", "portrait.jpg"}
    for p in pictures:
        im = imageio.load_image(p)
        assert max(im.size) <= 512 and min(im.size) >= 256  # within the engine's 256-1536 px
    mask = imageio.load_mask(root / "masks" / "shop_sign.png", size=imageio.load_image(root / "shop.png").size)
    assert 0 < np.asarray(mask).mean() < 64  # the sign only
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 600_000
