"""Images in and out: every supported file becomes one predictable RGB image; every output carries
the parameters that made it.

Torch-free, because the CLI, the engine, the HTTP API and the task store all read and write images
and the API must not import torch. Every failure on input is an ``InvalidInput`` naming the field
and the problem in one line, so a bad upload or a broken file in a batch never shows a traceback.

Input decisions:

- The container format is sniffed from the bytes (what PIL detects), never trusted from the name: a
  GIF renamed ``.png`` is refused as GIF, and a PNG named ``.jpg`` is read as the PNG it is.
- The pixel count is capped *before* decoding (``MAX_PIXELS``) so a small file that claims to be
  50 000 x 50 000 cannot exhaust memory (a "decompression bomb").
- Pixels are decoded in full at load time (``Image.load``), so a truncated file fails here, with
  the file named, and not deep inside the engine.
- EXIF orientation is applied: phones store portrait photos as rotated landscape pixels plus a tag,
  and the model must see the picture the user sees.
- 16-bit and 32-bit samples are scaled to 8 bits (not clipped: clipping turns a 16-bit image white).
- CMYK is converted through its embedded ICC profile when it has one (print files do, and PIL's
  naive formula shifts their colours), else with PIL's formula.
- Transparency is flattened onto white (see ``flatten``).

Output metadata (see ``encode_image``) lets anyone re-run an output: PNG keeps it in iTXt chunks,
JPEG and WebP in an XMP packet, the one container both formats write and read back through PIL.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, PngImagePlugin, UnidentifiedImageError

from qedit.errors import InvalidInput
from qedit.files import write_atomic

SUPPORTED_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp", "bmp", "tiff", "tif")
"""File name extensions (lower case, no dot) accepted as input; the bytes decide the actual format."""

# PIL's format name -> our name; MPO is what PIL calls a JPEG with extra frames (many phone cameras)
_INPUT_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff"}
ALLOWED_NAMES = "jpg, jpeg, png, webp, bmp, tiff"

OUTPUT_FORMATS: dict[str, str] = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
"""Output format names (and the ``jpg`` alias) -> PIL's encoder name."""
EXTENSIONS: dict[str, str] = {"jpeg": "jpg", "png": "png", "webp": "webp", "bmp": "bmp", "tiff": "tiff"}
"""Format name -> the extension qedit gives its files (inputs as stored, outputs as written)."""
MIME_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
}
"""Format name or extension -> media type (data URIs, served files)."""

MAX_PIXELS = 64 * 1024 * 1024
"""Largest input accepted (8192 x 8192). The engine works at ~1 MP, so larger only costs memory; the
cap is checked from the header, before any pixel is decoded."""

JPEG_QUALITY = 95
WEBP_QUALITY = 95
METADATA_KEY = "qedit"  # PNG iTXt key holding the JSON of the metadata
_JPEG_APP1_MAX = 65_000  # a JPEG APP1 segment (where XMP lives) holds at most 65 533 bytes
_XMP_RE = re.compile(rb"<qedit:json>(.*?)</qedit:json>", re.S)
_WHITE = (255, 255, 255)


# -- reading ----------------------------------------------------------------------------------------


def load_image(source: bytes | str | Path, field: str = "image") -> Image.Image:
    """Decode ``source`` (file bytes or a path) into a fully loaded RGB image.

    Transparent areas are flattened onto white: the model takes RGB, the colour hidden under
    transparent pixels is arbitrary (often black, sometimes left-over artwork), and white is what
    browsers and image viewers show behind transparency, so the model sees what the user saw (and
    cut-out product shots on white are the common convention the model knows).
    """
    image = _open(source, field)
    return to_rgb(image, field)


def load_mask(source: bytes | str | Path, field: str = "mask", size: tuple[int, int] | None = None) -> Image.Image:
    """Decode a mask into mode "L" where white (255) means "may change" and black (0) "keep".

    A file with a meaningful alpha channel (not all one value) is read from its alpha, the way
    OpenAI's image edits API reads masks: transparent (alpha 0) marks the area to edit, so alpha 0
    becomes white here and opaque becomes black. Any other file is read by its luminance, white =
    may change, which is what painting a mask in an image editor naturally gives. ``size`` (width,
    height) resizes bilinearly, keeping the soft edges a feathered mask has.
    """
    image = _open(source, field)
    alpha = _alpha(image)
    if alpha is not None and alpha.getextrema()[0] != alpha.getextrema()[1]:
        mask = ImageOps.invert(alpha)
    else:  # constant alpha: 255 everywhere is "no alpha"; 0 everywhere flattens to white = edit all
        mask = to_rgb(image, field).convert("L")
    if size is not None and mask.size != tuple(size):
        mask = mask.resize(tuple(size), Image.Resampling.BILINEAR)
    return mask


def read_metadata(source: bytes | str | Path) -> dict[str, str]:
    """What ``encode_image`` embedded, or ``{}`` for a file without (or with unreadable) qedit metadata.

    A missing or undecodable file still raises ``InvalidInput``: callers read metadata of inputs
    they also load, and a silent ``{}`` would hide the real problem.
    """
    image = _open(source, "image", load=False)
    raw: str | bytes | None = None
    if image.format == "PNG":
        text = getattr(image, "text", {}) or {}  # PngImageFile.text also reads chunks after the pixels
        raw = text.get(METADATA_KEY)
    else:
        xmp = image.info.get("xmp")
        if isinstance(xmp, bytes):
            m = _XMP_RE.search(xmp)
            raw = html.unescape(m.group(1).decode("utf-8", "replace")) if m else None
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, TypeError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in data.items()}


def sniff_format(source: bytes | str | Path, field: str = "image") -> str:
    """The input's real format (``jpeg``, ``png``, ``webp``, ``bmp``, ``tiff``) from its header."""
    return probe(source, field)[0]


def probe(source: bytes | str | Path, field: str = "image") -> tuple[str, tuple[int, int]]:
    """Format and (width, height) from the header alone: nothing is decoded.

    So that limits on the size are checked before a byte of pixels is: a 400 KB PNG can declare
    8192x8192 16-bit pixels, a gigabyte once decoded.
    """
    image = _open(source, field, load=False)
    return _INPUT_FORMATS[image.format or ""], image.size


def is_supported_name(path: str | Path) -> bool:
    """Does the file name carry one of ``SUPPORTED_EXTENSIONS`` (what ``qedit batch`` picks up)?"""
    return Path(path).suffix.lower().lstrip(".") in SUPPORTED_EXTENSIONS


def _read_source(source: bytes | str | Path, field: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise InvalidInput("image is empty (0 bytes)", field=field)
        return data
    path = Path(source)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}", field=field) from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory, not an image", field=field) from None
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror or e}", field=field) from None
    if not data:
        raise InvalidInput(f"{path} is empty (0 bytes)", field=field)
    return data


def _open(source: bytes | str | Path, field: str, *, load: bool = True) -> Image.Image:
    """Bytes -> an opened (and, with ``load``, decoded and EXIF-oriented) image of a supported format."""
    data = _read_source(source, field)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap is below PIL's
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise InvalidInput(f"image is too large (more than {MAX_PIXELS} pixels allowed)", field=field) from None
    except UnidentifiedImageError:
        raise InvalidInput(
            f"cannot read image: not an image file in a known format (allowed: {ALLOWED_NAMES})", field=field
        ) from None
    except Exception as e:  # a header so broken that the plugin itself fails
        raise InvalidInput(f"cannot read image: {_reason(e)}", field=field) from None
    fmt = image.format or "unknown"
    if fmt not in _INPUT_FORMATS:
        raise InvalidInput(f"unsupported format {fmt}; allowed: {ALLOWED_NAMES}", field=field)
    w, h = image.size
    if w < 1 or h < 1:
        raise InvalidInput(f"image has no pixels ({w}x{h})", field=field)
    if w * h > MAX_PIXELS:
        raise InvalidInput(f"image is too large: {w}x{h} is more than {MAX_PIXELS} pixels", field=field)
    if not load:
        return image
    try:
        image.load()
    except Exception as e:  # OSError, SyntaxError, EOFError, ValueError, struct.error ... all "a broken file"
        raise InvalidInput(f"cannot read image: {_reason(e)}", field=field) from None
    with contextlib.suppress(Exception):  # a broken EXIF block is not worth refusing the picture for
        ImageOps.exif_transpose(image, in_place=True)
    return image


def _reason(e: Exception) -> str:
    text = str(e)
    if isinstance(e, EOFError) or "truncated" in text.lower():
        return "file is truncated"
    return text.splitlines()[0] if text else type(e).__name__


# -- conversion -------------------------------------------------------------------------------------


def to_rgb(image: Image.Image, field: str = "image") -> Image.Image:
    """Any decoded PIL image -> RGB, 8 bits per channel, transparency flattened onto white."""
    fmt = image.format
    image = _to_8bit(image, field)
    if image.mode == "RGB":
        result = image
    elif image.mode == "CMYK":
        result = _cmyk_to_rgb(image, field)
    elif _has_alpha(image):
        result = flatten(_convert(image, "RGBA", field))
    else:
        result = _convert(image, "RGB", field)
    result.format = fmt
    return result


def flatten(image: Image.Image, background: tuple[int, int, int] = _WHITE) -> Image.Image:
    """RGBA -> RGB over ``background`` (white: see ``load_image``)."""
    if image.mode != "RGBA":
        image = image.convert("RGBA")
    base = Image.new("RGBA", image.size, (*background, 255))
    return Image.alpha_composite(base, image).convert("RGB")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)


def _alpha(image: Image.Image) -> Image.Image | None:
    """The alpha channel as "L" (palette transparency included), or ``None`` without one."""
    if not _has_alpha(image):
        return None
    return image.convert("RGBA").getchannel("A") if image.mode in ("P", "PA") else image.getchannel("A")


def _convert(image: Image.Image, mode: str, field: str) -> Image.Image:
    try:
        return image.convert(mode)
    except (ValueError, OSError) as e:
        raise InvalidInput(f"cannot convert a {image.mode} image to {mode}: {e}", field=field) from None


def _to_8bit(image: Image.Image, field: str) -> Image.Image:
    """Scale 16/32-bit integer and float single-channel images to "L" (proportionally, not clipped).

    ``I;16*``: 0-65535. ``I``: treated as 16-bit too (PNG and TIFF 16-bit grey decode to it in some
    PIL versions; a genuine 32-bit range is rare in photos and is clipped). ``F``: 0-1 when its
    maximum is <= 1 (the usual float convention), else 0-255.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(image).astype(np.float64)
        a = np.clip(a, 0, 65535) / 257.0
    elif mode == "F":
        a = np.asarray(image).astype(np.float64)
        a = np.nan_to_num(a, nan=0.0)
        a = a * 255.0 if a.size and float(a.max()) <= 1.0 else a
    else:
        return image
    out = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    out.info = dict(image.info)
    return out


def _cmyk_to_rgb(image: Image.Image, field: str) -> Image.Image:
    icc = image.info.get("icc_profile")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(image, src, dst, outputMode="RGB")
            if out is not None:
                return out
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken or non-CMYK profile: fall back to the plain formula rather than refuse
    return _convert(image, "RGB", field)


# -- writing ----------------------------------------------------------------------------------------


def normalise_format(fmt: str, field: str = "format") -> str:
    """``png`` | ``jpeg`` | ``webp`` from a name or extension (``JPG``, ``.jpeg`` ...)."""
    name = fmt.lower().lstrip(".")
    if name not in OUTPUT_FORMATS:
        raise InvalidInput(f"unknown output format {fmt!r}; use png, jpeg (jpg) or webp", field=field)
    return "jpeg" if name == "jpg" else name


def parameters_text(metadata: Mapping[str, str]) -> str:
    """The human-readable summary, in the layout other image tools use for a "parameters" chunk:
    the prompt on the first line, then ``Key: value`` pairs."""
    lines = [metadata.get("prompt", "")]
    if metadata.get("negative_prompt", "").strip():
        lines.append(f"Negative prompt: {metadata['negative_prompt']}")
    known = (
        ("steps", "Steps"),
        ("cfg", "CFG scale"),
        ("seed", "Seed"),
        ("size", "Size"),
        ("model", "Model"),
        ("engine", "Engine"),
    )
    pairs = [f"{label}: {metadata[key]}" for key, label in known if key in metadata]
    if pairs:
        lines.append(", ".join(pairs))
    return "\n".join(lines)


def encode_image(
    image: Image.Image,
    fmt: str,
    metadata: Mapping[str, str] | None = None,
    *,
    quality: int | None = None,
    lossless: bool = False,
) -> bytes:
    """``image`` as ``png`` / ``jpeg`` (``jpg``) / ``webp`` bytes with ``metadata`` embedded.

    PNG: iTXt ``qedit`` (the metadata as JSON) and ``parameters`` (readable text). JPEG and WebP: an
    XMP packet with the same two fields (PIL writes and reads XMP for both; EXIF UserComment has no
    agreed text encoding). JPEG and lossy WebP at quality 95, JPEG with full-resolution chroma so
    edited text stays crisp; ``lossless`` for WebP. Transparency is flattened onto white for JPEG.
    """
    name = normalise_format(fmt)
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    buf = io.BytesIO()
    if name == "png":
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1", "I", "I;16"):
            image = image.convert("RGB")
        info = PngImagePlugin.PngInfo()
        if meta:
            info.add_itxt(METADATA_KEY, json.dumps(meta, ensure_ascii=False))
            info.add_itxt("parameters", parameters_text(meta))
        image.save(buf, "PNG", pnginfo=info)
    elif name == "jpeg":
        image = _rgb_for_output(image)
        kwargs: dict = {"quality": quality or JPEG_QUALITY, "subsampling": 0}
        if meta:
            kwargs["xmp"] = _xmp(meta, limit=_JPEG_APP1_MAX)
        image.save(buf, "JPEG", **kwargs)
    else:
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if _has_alpha(image) else "RGB")
        kwargs = {"quality": quality or WEBP_QUALITY, "lossless": lossless}
        if meta:
            kwargs["xmp"] = _xmp(meta)
        image.save(buf, "WEBP", **kwargs)
    return buf.getvalue()


def _rgb_for_output(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    return flatten(image.convert("RGBA")) if _has_alpha(image) else image.convert("RGB")


def _xmp(meta: dict[str, str], limit: int | None = None) -> bytes:
    """An XMP packet with ``qedit:json`` and ``qedit:parameters``. Over ``limit`` (JPEG's one APP1
    segment), the chain of earlier edits is dropped first, then the readable copy: the JSON of this
    edit's own parameters is what re-running needs."""
    variants = [meta]
    if "chain" in meta:
        variants.append({**{k: v for k, v in meta.items() if k != "chain"}, "chain_truncated": "true"})
    for candidate in variants:
        for readable in (True, False):
            packet = _xmp_packet(candidate, readable)
            if limit is None or len(packet) <= limit:
                return packet
    return packet  # still too large: PIL refuses and save_image reports it as one line


def _xmp_packet(meta: dict[str, str], readable: bool) -> bytes:
    esc = html.escape
    parts = [f"<qedit:json>{esc(json.dumps(meta, ensure_ascii=False), quote=False)}</qedit:json>"]
    if readable:
        parts.append(f"<qedit:parameters>{esc(parameters_text(meta), quote=False)}</qedit:parameters>")
    body = "".join(parts)
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:qedit="https://github.com/qedit/qedit/ns/1.0/">'
        f"{body}</rdf:Description></rdf:RDF></x:xmpmeta>"
        '<?xpacket end="w"?>'
    ).encode()


def format_for_path(path: str | Path, field: str = "output") -> str:
    """The output format a file name asks for (``.png``, ``.jpg``/``.jpeg``, ``.webp``)."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in OUTPUT_FORMATS:
        shown = f"extension .{suffix}" if suffix else "no extension"
        raise InvalidInput(f"cannot write {Path(path).name!r}: {shown}; use .png, .jpg, .jpeg or .webp", field=field)
    return normalise_format(suffix)


def save_image(
    image: Image.Image,
    path: str | Path,
    fmt: str | None = None,
    metadata: Mapping[str, str] | None = None,
    *,
    lossless: bool = False,
) -> Path:
    """Write ``image`` to ``path`` atomically; returns ``path``.

    The bytes are encoded in memory, written to a hidden temporary file in the same directory,
    fsynced, then renamed over ``path``: a crash or Ctrl-C mid-write never leaves a partial file,
    so "the output exists" means "the output is complete" (``qedit batch`` resumes on that).
    """
    path = Path(path)
    name = normalise_format(fmt) if fmt else format_for_path(path)
    if not path.parent.is_dir():
        raise InvalidInput(f"directory {path.parent} does not exist", field="output")
    try:
        data = encode_image(image, name, metadata, lossless=lossless)
    except (OSError, ValueError) as e:
        raise InvalidInput(f"cannot encode {path.name} as {name}: {e}", field="output") from None
    try:
        write_atomic(path, data)
    except OSError as e:
        raise InvalidInput(f"cannot write {path}: {e.strerror or e}", field="output") from None
    return path
