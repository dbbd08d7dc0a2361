"""``qedit models``: the known specs and the snapshots found on this machine."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model specs and the snapshots found locally")
    p.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="DIR",
        help="also look for snapshots under DIR (repeatable); $QEDIT_MODELS_PATH is searched too",
    )
    p.set_defaults(func=run)


def find_snapshots(roots: list[Path]) -> list[tuple[Path, str]]:
    """Directories (depth <= 3) holding a Qwen-Image-Edit model_index.json, with their detected spec."""
    from qedit.errors import QeditError
    from qedit.models.snapshot import detect_spec

    found: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for index in sorted(
            {
                *root.glob("model_index.json"),
                *root.glob("*/model_index.json"),
                *root.glob("*/*/model_index.json"),
                *root.glob("*/*/*/model_index.json"),
            }
        ):
            snap = index.parent.resolve()
            if snap in seen:
                continue
            seen.add(snap)
            try:
                found.append((snap, detect_spec(snap).name))
            except QeditError:
                continue  # another kind of diffusers pipeline
    return found


def search_roots(extra: list[str]) -> list[Path]:
    from qedit.engine.tiny import cache_dir

    roots = [Path(p).expanduser() for p in extra]
    roots += [Path(p).expanduser() for p in os.environ.get("QEDIT_MODELS_PATH", "").split(os.pathsep) if p]
    roots.append(cache_dir() / "models")
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    roots.append(hf_home)
    return roots


def run(args: argparse.Namespace) -> int:
    from qedit.models.specs import SPECS

    print("Specs:")
    for spec in SPECS.values():
        images = f"1-{spec.max_images} images" if spec.max_images > 1 else "1 image"
        print(
            f"  {spec.name:22} {images:10} steps {spec.default_steps:<3} cfg {spec.default_cfg:<4g} {spec.description}"
        )
    snapshots = find_snapshots(search_roots(args.path))
    print("Snapshots found:" if snapshots else "Snapshots found: none (real weights: see README, 'Real weights')")
    for path, name in snapshots:
        print(f"  {name:22} {path}")
    return 0
