"""Draw the demo images in this folder, procedurally and deterministically.

    python examples/make_examples.py            # rewrites examples/*.png|jpg and examples/masks/

Each picture stands in for a kind of photo people edit (a shop sign to re-letter, a bilingual
poster, a product shot, a portrait) without shipping anyone's photograph. Text uses fonts found
with fontconfig: a CJK font for the Chinese lines (e.g. Debian's fonts-wqy-microhei or
fonts-noto-cjk; without one the Chinese lines are left out and a note is printed), DejaVu for
Latin, else PIL's built-in font. The same fonts and Pillow version give byte-identical files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = Path(__file__).resolve().parent
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


# -- fonts -----------------------------------------------------------------------------------------


def _fc_match(pattern: str) -> str | None:
    if shutil.which("fc-match") is None:
        return None
    try:
        out = subprocess.run(["fc-match", "-f", "%{file}", pattern], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _cjk_files() -> list[str]:
    """Font files covering Chinese, sorted so the choice is stable (fc-match may answer DejaVu)."""
    if shutil.which("fc-list") is None:
        return []
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted({line.split(":")[0].strip() for line in out.splitlines() if line.strip()})


def latin_font(size: int, bold: bool = True) -> Font:
    path = _fc_match("DejaVu Sans:bold" if bold else "DejaVu Sans")
    if path and path.endswith((".ttf", ".otf", ".ttc")):
        return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def cjk_font(size: int) -> Font | None:
    files = _cjk_files()
    return ImageFont.truetype(files[0], size) if files else None


# -- painting helpers ------------------------------------------------------------------------------


def gradient(size: tuple[int, int], top: tuple[int, int, int], bottom: tuple[int, int, int]) -> np.ndarray:
    """(H, W, 3) float: a vertical blend from ``top`` to ``bottom``."""
    w, h = size
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    return np.broadcast_to(np.array(top) * (1 - t) + np.array(bottom) * t, (h, w, 3)).copy()


def grain(a: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Sensor-like noise so the pictures are not flat vector art (and JPEG behaves as on photos)."""
    return a + rng.normal(0.0, amount, a.shape[:2])[..., None]


def to_image(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")


def centred_text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font: Font, fill: tuple,
                 stroke: int = 0, stroke_fill: tuple | None = None) -> None:  # fmt: skip
    draw.text(xy, text, font=font, fill=fill, anchor="mm", stroke_width=stroke, stroke_fill=stroke_fill)


# -- the pictures ----------------------------------------------------------------------------------


def shop() -> tuple[Image.Image, Image.Image]:
    """A bakery front: brick wall, sign board with lettering, striped awning, window, door, pavement.

    Returns the picture and a mask of the sign board (white = may change) for ``--mask`` demos.
    """
    w, h = 512, 384
    rng = np.random.default_rng(1)
    a = gradient((w, h), (150, 82, 64), (120, 64, 52))
    # brick courses: darker mortar lines, each brick's tone varied
    for row, y in enumerate(range(0, 300, 14)):
        offset = 0 if row % 2 == 0 else 18
        for x in range(-offset, w, 36):
            a[y : y + 12, max(x, 0) : max(x + 34, 0)] *= rng.uniform(0.88, 1.1)
        a[y + 12 : y + 14] = (170, 160, 150)
    a[300:] = gradient((w, h - 300), (160, 160, 156), (120, 120, 118))  # pavement
    for x in range(0, w, 64):
        a[300:, x : x + 2] = (105, 105, 103)
    img = to_image(grain(a, rng, 3.0))
    d = ImageDraw.Draw(img)
    sign = (86, 30, 426, 104)
    d.rectangle((sign[0] - 6, sign[1] - 6, sign[2] + 6, sign[3] + 6), fill=(60, 40, 25))  # frame
    d.rectangle(sign, fill=(24, 58, 46))
    latin = latin_font(34)
    cjk = cjk_font(26)
    if cjk is not None:
        centred_text(d, (256, 56), "SUNRISE BAKERY", latin, (236, 204, 120))
        centred_text(d, (256, 90), "日出面包店", cjk, (236, 204, 120))
    else:
        centred_text(d, (256, 67), "SUNRISE BAKERY", latin, (236, 204, 120))
    # awning: red and cream stripes with a scalloped edge and shade below
    for i, x in enumerate(range(60, 452, 28)):
        d.polygon([(x, 118), (x + 28, 118), (x + 34, 150), (x - 6, 150)],
                  fill=(178, 34, 40) if i % 2 == 0 else (240, 230, 210))  # fmt: skip
        d.pieslice((x - 6, 140, x + 34, 162), 0, 180, fill=(178, 34, 40) if i % 2 == 0 else (240, 230, 210))
    # window with loaves on shelves, and a door
    d.rectangle((70, 166, 300, 292), fill=(48, 36, 30))
    d.rectangle((78, 174, 292, 284), fill=(226, 214, 180))
    for shelf_y in (222, 276):
        d.rectangle((78, shelf_y, 292, shelf_y + 4), fill=(120, 84, 50))
        for k, x in enumerate(range(90, 280, 38)):
            tone = (196 - 10 * (k % 3), 132 - 8 * (k % 2), 64)
            d.ellipse((x, shelf_y - 26, x + 30, shelf_y - 2), fill=tone, outline=(140, 90, 40))
    d.line((185, 174, 185, 284), fill=(48, 36, 30), width=5)
    d.rectangle((340, 160, 430, 300), fill=(48, 36, 30))
    d.rectangle((348, 168, 422, 300), fill=(90, 54, 38))
    d.rectangle((358, 180, 412, 240), fill=(200, 210, 205))
    d.ellipse((408, 248, 416, 256), fill=(210, 180, 90))
    centred_text(d, (385, 210), "OPEN", latin_font(14), (30, 90, 40))
    img = img.filter(ImageFilter.GaussianBlur(0.6))
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).rectangle((sign[0] - 6, sign[1] - 6, sign[2] + 6, sign[3] + 6), fill=255)
    return img, mask


def poster() -> Image.Image:
    """A bilingual grand-opening poster: headline in Chinese and English, a date line, a badge."""
    w, h = 384, 512
    rng = np.random.default_rng(2)
    a = gradient((w, h), (196, 24, 36), (120, 10, 24))
    yy, xx = np.mgrid[0:h, 0:w]
    glow = np.exp(-(((xx - w / 2) / 180.0) ** 2 + ((yy - 150) / 140.0) ** 2))
    a += glow[..., None] * np.array([60, 40, 10])
    img = to_image(grain(a, rng, 2.0))
    d = ImageDraw.Draw(img)
    gold, cream = (250, 206, 96), (255, 244, 220)
    d.rectangle((14, 14, w - 15, h - 15), outline=gold, width=3)
    d.rectangle((22, 22, w - 23, h - 23), outline=gold, width=1)
    cjk = cjk_font(72)
    if cjk is not None:
        centred_text(d, (w / 2, 130), "开业大吉", cjk, gold, stroke=2, stroke_fill=(110, 10, 20))
        centred_text(d, (w / 2, 330), "全场八折 · 欢迎光临", cjk_font(24) or latin_font(24), cream)
    centred_text(d, (w / 2, 215), "GRAND OPENING", latin_font(31), cream)
    centred_text(d, (w / 2, 262), "20% OFF EVERYTHING", latin_font(20, bold=False), gold)
    d.ellipse((w / 2 - 56, 372, w / 2 + 56, 484), fill=gold)
    d.ellipse((w / 2 - 48, 380, w / 2 + 48, 476), outline=(160, 20, 30), width=2)
    centred_text(d, (w / 2, 416), "MAY", latin_font(20), (150, 20, 30))
    centred_text(d, (w / 2, 446), "18", latin_font(34), (150, 20, 30))
    return img.filter(ImageFilter.GaussianBlur(0.4))


def product() -> Image.Image:
    """A studio product shot: a glossy ceramic mug on a seamless backdrop, soft shadow, highlight."""
    w, h = 448, 448
    rng = np.random.default_rng(3)
    a = gradient((w, h), (236, 238, 242), (196, 200, 208))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # contact shadow under the mug
    shadow = np.exp(-(((xx - 214) / 120.0) ** 2 + ((yy - 352) / 16.0) ** 2))
    a *= 1 - 0.45 * shadow[..., None]
    # the body: a cylinder shaded by the cosine of the surface normal (light from the left)
    x0, x1, top, bottom = 124, 304, 130, 350
    inside = (xx >= x0) & (xx <= x1) & (yy >= top) & (yy <= bottom)
    u = np.clip((xx - x0) / (x1 - x0) * 2 - 1, -1, 1)  # -1 left edge .. 1 right edge
    shade = np.clip(0.25 + 0.75 * np.cos((u + 0.35) * np.pi / 2.2), 0.12, 1.0)
    spec = np.exp(-(((u + 0.45) / 0.07) ** 2)) * 0.8
    colour = np.array([38, 92, 168])
    body = colour * shade[..., None] + 255 * spec[..., None]
    a = np.where(inside[..., None], body, a)
    img = to_image(grain(a, rng, 1.5))
    d = ImageDraw.Draw(img)
    d.ellipse((x0, top - 18, x1, top + 18), fill=(28, 70, 132))  # rim
    d.ellipse((x0 + 10, top - 12, x1 - 10, top + 12), fill=(60, 40, 28))  # coffee
    d.ellipse((x0, bottom - 14, x1, bottom + 14), fill=(30, 74, 138))  # rounded base
    d.arc((258, 178, 346, 298), -75, 75, fill=(32, 80, 150), width=18)  # handle
    d.arc((266, 186, 338, 290), -60, 60, fill=(70, 120, 196), width=4)
    centred_text(d, (206, 246), "qedit", latin_font(30), (236, 240, 248))
    return img.filter(ImageFilter.GaussianBlur(0.7))


def portrait() -> Image.Image:
    """A head-and-shoulders portrait: a soft studio backdrop, face, hair, eyes, a collared shirt."""
    w, h = 384, 512
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    vignette = np.exp(-(((xx - w / 2) / 260.0) ** 2 + ((yy - 200) / 300.0) ** 2))
    a = np.array([92, 110, 120]) * (0.55 + 0.45 * vignette[..., None])
    img = to_image(grain(a, rng, 2.5))
    d = ImageDraw.Draw(img)
    skin, skin_dark = (224, 178, 150), (198, 150, 124)
    d.ellipse((60, 380, 324, 620), fill=(232, 232, 226))  # shoulders / shirt
    d.polygon([(192, 400), (160, 380), (176, 440)], fill=(210, 210, 204))  # collar
    d.polygon([(192, 400), (224, 380), (208, 440)], fill=(210, 210, 204))
    d.rectangle((166, 320, 218, 400), fill=skin_dark)  # neck
    d.ellipse((112, 120, 272, 340), fill=skin)  # face
    d.chord((104, 96, 280, 250), 180, 360, fill=(58, 38, 28))  # hair
    d.ellipse((104, 150, 126, 260), fill=(58, 38, 28))
    d.ellipse((258, 150, 280, 260), fill=(58, 38, 28))
    d.ellipse((104, 200, 122, 244), fill=skin_dark)  # ears
    d.ellipse((262, 200, 280, 244), fill=skin_dark)
    for cx in (160, 224):
        d.ellipse((cx - 16, 214, cx + 16, 232), fill=(250, 248, 244))  # eyes
        d.ellipse((cx - 7, 216, cx + 7, 230), fill=(70, 52, 40))
        d.ellipse((cx - 3, 219, cx + 1, 223), fill=(255, 255, 255))
        d.arc((cx - 22, 196, cx + 22, 214), 200, 340, fill=(60, 40, 30), width=4)  # brows
    d.polygon([(192, 236), (182, 276), (200, 278)], fill=skin_dark)  # nose
    d.chord((164, 282, 220, 312), 10, 170, fill=(176, 86, 88))  # mouth
    return img.filter(ImageFilter.GaussianBlur(1.2))


def main() -> int:
    HERE.mkdir(exist_ok=True)
    if cjk_font(12) is None:
        print("note: no CJK font found (install fonts-wqy-microhei or fonts-noto-cjk); Chinese text left out",
              file=sys.stderr)  # fmt: skip
    shop_img, shop_mask = shop()
    shop_img.save(HERE / "shop.png", optimize=True)
    (HERE / "masks").mkdir(exist_ok=True)  # a sub-folder, so `qedit batch examples` edits only the pictures
    shop_mask.save(HERE / "masks" / "shop_sign.png", optimize=True)
    poster().save(HERE / "poster.jpg", quality=90)
    product().save(HERE / "product.png", optimize=True)
    portrait().save(HERE / "portrait.jpg", quality=90)
    for name in ("shop.png", "masks/shop_sign.png", "poster.jpg", "product.png", "portrait.jpg"):
        path = HERE / name
        with Image.open(path) as im:
            print(f"{name:20} {im.size[0]}x{im.size[1]}  {path.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
