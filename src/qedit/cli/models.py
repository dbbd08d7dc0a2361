"""``qedit models``: the known specs and the snapshots found on this machine, and for each the
Lightning files ``--fast`` would use (or where to put them).

``--fast`` fails, by design, when the variant's Lightning LoRA is missing; this listing is where a
user finds out beforehand which files are in place, and the exact name and URL of the ones that are
not. A snapshot with Lightning fused in needs none and is marked so.
"""

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
    from qedit.models.snapshot import cache_root

    roots = [Path(p).expanduser() for p in extra]
    roots += [Path(p).expanduser() for p in os.environ.get("QEDIT_MODELS_PATH", "").split(os.pathsep) if p]
    roots.append(cache_root() / "models")
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    roots.append(hf_home)
    return roots


def lightning_lines(family: str, dirs: tuple[Path, ...]) -> list[str]:
    """One line per step count: the file ``--fast`` would use, or which file to get and where to put it."""
    from qedit.loras import lightning

    found = lightning.available(family, dirs)
    repo, folder = lightning.HUB.get(family, ("lightx2v/Qwen-Image-Lightning", ""))
    where = dirs[-1] if dirs else Path("lightning")
    return [
        f"--fast {steps}: {found[steps]}"
        if steps in found
        else f"--fast {steps}: missing; download {folder}{lightning.file_name(family, steps)} "
        f"from https://huggingface.co/{repo} into {where}"
        for steps in lightning.STEPS
    ]


def snapshot_lightning(path: Path, family: str, dirs: tuple[Path, ...]) -> list[str]:
    """A snapshot's Lightning state: fused in, or the files found for it (its own lightning/ first)."""
    from qedit.errors import QeditError
    from qedit.loras import lightning
    from qedit.models.snapshot import read_json

    try:
        fused = lightning.fused_steps(
            f"{path} {path.name}",  # as the loader names it when given this path
            read_json(path / "model_index.json"),
            read_json(path / "scheduler" / "scheduler_config.json"),
        )
    except QeditError:
        fused = None
    if fused is not None:
        return [f"Lightning fused in: runs {fused} steps without CFG (--fast {fused} or no --fast)"]
    return lightning_lines(family, lightning.search_dirs(path, dirs))


def run(args: argparse.Namespace) -> int:
    from qedit.loras import lightning
    from qedit.models.specs import SPECS

    print("Specs:")
    for spec in SPECS.values():
        images = f"1-{spec.max_images} images" if spec.max_images > 1 else "1 image"
        print(
            f"  {spec.name:22} {images:10} steps {spec.default_steps:<3} cfg {spec.default_cfg:<4g} {spec.description}"
        )
    dirs = lightning.default_dirs()
    print(
        f"Lightning LoRAs (--fast), looked for in a snapshot's lightning/, {', '.join(map(str, dirs))}, the hub cache:"
    )
    for spec in SPECS.values():
        if not spec.tiny:  # the tiny presets carry their own, listed with their snapshots
            for i, line in enumerate(lightning_lines(spec.lightning, dirs)):
                print(f"  {spec.name if i == 0 else '':22} {line}")
    snapshots = find_snapshots(search_roots(args.path))
    print("Snapshots found:" if snapshots else "Snapshots found: none (real weights: see README, 'Real weights')")
    for path, name in snapshots:
        print(f"  {name:22} {path}")
        for line in snapshot_lightning(path, SPECS[name].lightning, dirs):
            print(f"  {'':22}   {line}")
    return 0
