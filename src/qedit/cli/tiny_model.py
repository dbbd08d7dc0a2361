"""``qedit tiny-model DIR``: write the tiny random snapshot (what ``--model tiny`` caches)."""

from __future__ import annotations

import argparse


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
        choices=["edit", "plus"],
        default="edit",
        help="edit: like Qwen-Image-Edit (1 image); plus: like 2509 (1-3 images)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from qedit.engine.tiny import write_tiny_snapshot

    path = write_tiny_snapshot(args.dir, args.variant)
    print(f"wrote tiny-{args.variant} snapshot to {path} (load it with --model {path})")
    return 0
