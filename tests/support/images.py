"""Image files for tests, generated in code: one small function per input class a user may bring.

Plain functions (not fixtures) so any test module can import them; every function is deterministic
and returns the encoded file's bytes unless it says otherwise.
"""

from __future__ import annotations

import base64
import io
import struct

import numpy as np
from PIL import Image, ImageDraw

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def pattern(size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """An RGB image with smooth gradients (compresses honestly) and a marked top-left corner (red)."""
    w, h = size
    x = np.linspace(0, 1, w)[None, :]
    y = np.linspace(0, 1, h)[:, None]
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 1, 3)
    rgb = np.stack(
        [(x * 0.8 + phase[0] * 0.2) + 0 * y, (y * 0.8 + phase[1] * 0.2) + 0 * x, ((x + y) / 2 * 0.8 + phase[2] * 0.2)],
        axis=-1,
    )
    a = (np.clip(rgb, 0, 1) * 200 + 20).astype(np.uint8)
    a[: h // 4, : w // 4] = RED
    return Image.fromarray(a, "RGB")


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_bytes(
    size: tuple[int, int] = (480, 400),
    colour: tuple[int, int, int] = (20, 160, 60),
    fmt: str = "PNG",
    mode: str = "RGB",
) -> bytes:
    """A flat image, big enough for the service's default input limits (384-3072 px a side)."""
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 255).save(buf, fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{b64(data)}"


def scene(w: int = 256, h: int = 192, seed: int = 0) -> Image.Image:
    """An RGB picture with gradients, noise, shapes and text (returns the image, not bytes)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w * 200 + 30, y / h * 180 + 40, (x + y) / (w + h) * 150 + 60], -1)
    base += rng.normal(0, 6, (h, w, 3))
    image = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(image)
    d.ellipse([20, 20, 90, 90], fill=(240, 240, 30))
    d.rectangle([150, 30, 240, 70], fill=(10, 10, 10))
    d.text((30, 160), "HELLO qedit", fill=(255, 255, 255))
    return image


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(pattern(size), "JPEG", quality=95)


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(pattern(size), "PNG")


def webp(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(pattern(size), "WEBP", lossless=True)


def bmp(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(pattern(size), "BMP")


def tiff(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(pattern(size), "TIFF", compression="tiff_lzw")


def gray16_array(size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """A 16-bit horizontal ramp 0 -> 65535 (left black, right white)."""
    w, h = size
    return np.tile(np.linspace(0, 65535, w).round().astype(np.uint16), (h, 1))


def png16_gray(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(Image.fromarray(gray16_array(size)), "PNG")


def tiff16_gray(size: tuple[int, int] = (64, 48)) -> bytes:
    return encode(Image.fromarray(gray16_array(size)), "TIFF")


def tiff48_rgb(size: tuple[int, int] = (16, 8), colour16: tuple[int, int, int] = (65535, 32896, 0)) -> bytes:
    """An uncompressed 16-bit-per-channel RGB TIFF, written by hand (PIL cannot write one)."""
    w, h = size
    pixels = np.empty((h, w, 3), "<u2")
    pixels[:] = colour16
    data = pixels.tobytes()
    entries = [  # (tag, type, count, value); type 3 = SHORT, 4 = LONG
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, 3, None),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, None),
        (277, 3, 1, 3),
        (278, 4, 1, h),
        (279, 4, 1, len(data)),
        (284, 3, 1, 1),
    ]
    ifd_offset = 8
    ifd_size = 2 + 12 * len(entries) + 4
    bits_offset = ifd_offset + ifd_size
    data_offset = bits_offset + 6
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset))
    out += struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 258:
            out += struct.pack("<HHII", tag, typ, count, bits_offset)
        elif tag == 273:
            out += struct.pack("<HHII", tag, typ, count, data_offset)
        elif typ == 3:
            out += struct.pack("<HHIHH", tag, typ, count, value, 0)
        else:
            out += struct.pack("<HHII", tag, typ, count, value)
    out += struct.pack("<I", 0)
    out += struct.pack("<HHH", 16, 16, 16)
    out += data
    return bytes(out)


def gray_png(value: int = 128, size: tuple[int, int] = (32, 32)) -> bytes:
    return encode(Image.new("L", size, value), "PNG")


def bilevel_png(size: tuple[int, int] = (32, 32)) -> bytes:
    """Mode "1": left half black, right half white."""
    im = Image.new("1", size, 0)
    im.paste(1, (size[0] // 2, 0, size[0], size[1]))
    return encode(im, "PNG")


def cmyk_jpeg(
    cmyk: tuple[int, int, int, int] = (0, 255, 255, 0),
    size: tuple[int, int] = (32, 32),
    icc_profile: bytes | None = None,
) -> bytes:
    """A CMYK JPEG; the default colour (no cyan and black, full magenta and yellow) is red."""
    kwargs = {"quality": 95}
    if icc_profile is not None:
        kwargs["icc_profile"] = icc_profile
    return encode(Image.new("CMYK", size, cmyk), "JPEG", **kwargs)


def palette_transparent_png(size: tuple[int, int] = (32, 32)) -> bytes:
    """Mode "P": index 0 (black) is transparent and fills the left half; index 1 is blue."""
    im = Image.new("P", size, 0)
    im.putpalette([0, 0, 0, *BLUE] + [0] * (256 - 2) * 3)
    im.paste(1, (size[0] // 2, 0, size[0], size[1]))
    return encode(im, "PNG", transparency=0)


def rgba_png(size: tuple[int, int] = (32, 32)) -> bytes:
    """Left half fully transparent *black* (what a careless exporter leaves), right half opaque green."""
    im = Image.new("RGBA", size, (0, 0, 0, 0))
    im.paste((*GREEN, 255), (size[0] // 2, 0, size[0], size[1]))
    return encode(im, "PNG")


def exif_rotated_jpeg(size: tuple[int, int] = (64, 32), orientation: int = 6) -> bytes:
    """Landscape pixels, red top-left corner, EXIF orientation 6 ("rotate 90° clockwise to view")."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(pattern(size), "JPEG", quality=95, exif=exif.tobytes())


def gif(size: tuple[int, int] = (16, 16)) -> bytes:
    return encode(Image.new("P", size, 0), "GIF")


def truncated_jpeg() -> bytes:
    data = jpeg((256, 256))
    return data[: len(data) // 2]


def truncated_png(size: tuple[int, int] = (128, 128)) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), np.uint8)
    data = encode(Image.fromarray(pixels), "PNG")
    return data[: len(data) // 2]


def random_bytes(n: int = 2048) -> bytes:
    return np.random.default_rng(1).integers(0, 256, n, np.uint8).tobytes()


def alpha_mask_png(size: tuple[int, int] = (32, 32)) -> bytes:
    """OpenAI-style mask: opaque black everywhere except a transparent right half (the area to edit)."""
    im = Image.new("RGBA", size, (0, 0, 0, 255))
    im.paste((0, 0, 0, 0), (size[0] // 2, 0, size[0], size[1]))
    return encode(im, "PNG")


def bomb_png_header(width: int = 50_000, height: int = 50_000) -> bytes:
    """A PNG whose header claims ``width x height`` but holds almost no data."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
