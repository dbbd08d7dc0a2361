"""Invariance figures for appearance edits, measured side by side in one run on the example images.

    .venv/bin/python bench/invariance.py                 # tiny preset, 4 steps, the examples/ images
    .venv/bin/python bench/invariance.py --model /models/Qwen-Image-Edit-2509 --steps 50

For each image, with one mask (examples/masks/<name>_*.png when there is one, else a centred box):

- outside the mask, the largest pixel difference between output and input for
  * qedit with the mask (latent masking + pixel composite): the goal is 0;
  * the plain pipeline, no mask (the reference's behaviour: the whole image through the VAE, at
    the reference's working size);
  * ``preserve=auto`` on a simulated reference output (the VAE round trip's blur and colour drift
    plus one real change in the mask's box), against that output as it is, 24 px away from the box;
- the largest geometric offset of the working-size round trip (a stand-in model returning its
  input unchanged) with qedit's exact fit; and, at the real models' ~1 MP, beside the reference's
  sizes: its round trip when stretched back, the aspect distortion its independent rounding puts
  on what the model sees, and how far an edge lands when its output is scaled back keeping aspect;
- the same outside-mask figure after ``--rounds`` chained edits, each fed the previous output.

With the tiny preset the "edit" is noise, which is the hard case for invariance: every pixel the
model touches changes a lot. Exit code 1 if a qedit figure that should be 0 is not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from qedit import masks
from qedit.engine.geometry import plan, round_trip_offset
from qedit.engine.pipeline import Engine
from qedit.models.protocol import EditRequest
from qedit.models.specs import MP
from qedit.params import EditParams

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _mask_for(image_path: Path, size: tuple[int, int]) -> Image.Image:
    found = sorted((EXAMPLES / "masks").glob(f"{image_path.stem}_*.png"))
    if found:
        return Image.open(found[0]).convert("L")
    w, h = size
    m = Image.new("L", size, 0)
    ImageDraw.Draw(m).rectangle([w // 3, h // 3, 2 * w // 3, 2 * h // 3], fill=255)
    return m


def _vae_like_drift(image: Image.Image) -> Image.Image:
    a = np.asarray(image.filter(ImageFilter.BoxBlur(1)), dtype=np.int16)
    a = a + np.random.default_rng(1).integers(-2, 3, a.shape) + 1
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


def _max_outside(a: Image.Image, b: Image.Image, outside: np.ndarray) -> int:
    d = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max(axis=2)
    return int(d[outside].max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("images", nargs="*", type=Path)
    args = ap.parse_args(argv)
    paths = args.images or sorted(p for p in EXAMPLES.iterdir() if p.suffix in {".png", ".jpg"})

    engine = Engine.load(args.model)
    prompt = "Replace the marked area with a red ball, keep everything else"
    rows, bad = [], False
    for path in paths:
        image = Image.open(path).convert("RGB")
        mask = _mask_for(path, image.size)
        edit_mask = masks.prepare_edit_mask(mask, image.size, 0, EditParams(prompt="x").mask_feather)
        outside = edit_mask.soft == 0

        def run(img: Image.Image, mask: Image.Image | None = None, seed: int = 7, **kw: str) -> Image.Image:
            params = EditParams(prompt=prompt, seed=seed, num_inference_steps=args.steps, **kw)  # type: ignore[arg-type]
            return engine.edit(EditRequest(params=params, images=(img,), mask=mask)).outputs[0].image

        masked = run(image, mask)
        plain = run(image, fit="reference")
        # preserve=auto needs an output that changed in one place only, which random weights never
        # give: simulate the reference's round trip (blur, +-2 levels, +1 overall) plus a real edit.
        drifted = _vae_like_drift(image)
        x0, y0, x1, y1 = Image.fromarray(edit_mask.binary).getbbox() or (0, 0, 8, 8)
        ImageDraw.Draw(drifted).ellipse([x0, y0, x1, y1], fill=(220, 30, 30))
        preserved, _ = masks.preserve_changes(image, drifted)
        away = ~masks.dilate(edit_mask.binary, 24)
        chained_masked, chained_plain = image, image
        for r in range(args.rounds):
            chained_masked = run(chained_masked, mask, seed=100 + r)
            chained_plain = run(chained_plain, seed=100 + r, fit="reference")
        row: dict = {
            "size": image.size,
            "image": f"{path.name} {image.size[0]}x{image.size[1]}",
            "outside: qedit mask": _max_outside(masked, image, outside),
            "plain (reference)": _max_outside(plain, image, outside),
            "drift: plain": _max_outside(drifted, image, away),
            "drift: preserve": _max_outside(preserved, image, away),
            f"{args.rounds} rounds: mask": _max_outside(chained_masked, image, outside),
            f"{args.rounds} rounds: plain": _max_outside(chained_plain, image, outside),
            "offset px: exact": round_trip_offset(image.size, engine.spec.vae_area, "exact"),
        }
        bad |= row["outside: qedit mask"] != 0 or row["drift: preserve"] != 0 or row[f"{args.rounds} rounds: mask"] != 0
        bad |= round(row["offset px: exact"]) != 0
        rows.append(row)

    keys = [k for k in rows[0] if k != "size"]
    widths = [max(len(k), *(len(_fmt(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for r in rows:
        print("  ".join(_fmt(r[k]).ljust(w) for k, w in zip(keys, widths, strict=True)))
    print("\ngeometry at the real models' ~1 MP working area (px, and % aspect distortion the model sees)")
    print(
        "  input       working: exact / reference   round trip: exact / reference-stretched-back"
        "   reference aspect error   reference kept-aspect back: edge off by"
    )
    for size in dict.fromkeys([(1920, 1080), (1080, 1920), (3000, 400), (1000, 1000), *(r["size"] for r in rows)]):
        e, r = plan(size, MP, "exact"), plan(size, MP, "reference")
        aspect = (r.scale[0] / r.scale[1] - 1) * 100
        w, h = r.working
        kept_aspect = abs(h * size[0] / w - size[1])  # the output scaled back to the input's width
        print(
            f"  {size[0]:>4}x{size[1]:<5} {e.working[0]}x{e.working[1]} / {w}x{h}"
            f"   {round_trip_offset(size, MP, 'exact'):.2f} / {round_trip_offset(size, MP, 'reference'):.2f}"
            f"   {aspect:+.2f}%   {kept_aspect:.1f}"
        )
    return 1 if bad else 0


def _fmt(v: object) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    sys.exit(main())
