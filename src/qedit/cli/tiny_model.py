"""``qedit tiny-model DIR``: write a tiny random snapshot (what ``--model tiny``/``small`` caches).

``--with-loras`` adds sample LoRAs in every key format and the variant's Lightning files, so that
``--lora`` and ``--fast`` can be tried end to end without downloading anything; the command prints
what it wrote and an edit to run with them.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

DEMO_IMAGE = Path("examples") / "shop.png"  # in a checkout of the repository


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tiny-model",
        help="write a tiny random model snapshot of the real architecture (offline, deterministic)",
        description="Write a complete, randomly initialised, deterministic Qwen-Image-Edit snapshot "
        "(diffusers layout) for tests and demos. Its outputs are noise-like.",
    )
    p.add_argument("dir", help="directory to write (replaced if it exists)")
    p.add_argument(
        "--variant",
        choices=["edit", "plus", "small"],
        default="edit",
        help="edit: like Qwen-Image-Edit (1 image); plus: like 2509 (1-3 images); small: the bench preset "
        "(a wider transformer that dominates the time at 512x512, as the real one does)",
    )
    p.add_argument(
        "--with-loras",
        action="store_true",
        help="also write sample LoRAs (loras/style-<format>.safetensors, one per key format) and the "
        "variant's Lightning files (lightning/), for trying --lora and --fast",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qedit.engine.tiny import VARIANTS, write_tiny_snapshot

    path = write_tiny_snapshot(args.dir, args.variant, with_loras=args.with_loras)
    name = VARIANTS[args.variant][0]
    print(f"wrote {name} snapshot to {path} (load it with --model {path})")
    if args.with_loras:
        files = sorted((*(path / "loras").glob("*.safetensors"), *(path / "lightning").glob("*.safetensors")))
        for file in files:
            print(f"  {file}")
        image = shlex.quote(str(DEMO_IMAGE if DEMO_IMAGE.is_file() else Path("photo.png")))
        model, lora = shlex.quote(str(path)), shlex.quote(f"{path / 'loras' / 'style-kohya.safetensors'}")
        print("try:")
        print(f'  qedit edit {image} -p "make it brighter" -o out.png --model {model} --lora {lora}:0.8 --fast 8')
        print(f"  qedit lora inspect {lora} --model {model}")
    return 0
