"""``qedit models``: the known specs and the snapshots found on this machine, and for each the
Lightning files ``--fast`` would use (or where to put them).

``--fast`` fails, by design, when the variant's Lightning LoRA is missing; this listing is where a
user finds out beforehand which files are in place, and the exact name and URL of the ones that are
not. A snapshot with Lightning fused in needs none and is marked so.

A snapshot that would not load (a component folder or weights file missing, a config that does not
parse, a truncated weights file) is listed as broken with the loader's own reason
(``snapshot.check_files``), not as a model to use; a ``--path`` that is not a directory is an error.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from qedit.errors import InvalidInput, quote


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


@dataclass(frozen=True)
class Found:
    """A snapshot directory: its spec's name (None when not even that can be read) and what is broken."""

    path: Path
    name: str | None
    problem: str | None = None


def find_snapshots(roots: list[Path]) -> list[Found]:
    """Directories (depth <= 3) holding a Qwen-Image-Edit model_index.json: their detected spec, and
    for a snapshot that would not load, why (the loader's message). Other pipelines are left out."""
    from qedit.errors import QeditError
    from qedit.models.snapshot import check_files, detect_spec, is_family_index, read_json

    found: list[Found] = []
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
                if not is_family_index(read_json(index)):
                    continue  # another kind of diffusers pipeline
                name = detect_spec(snap).name
            except QeditError as e:
                found.append(Found(snap, None, e.message))
                continue
            try:
                check_files(snap)
            except QeditError as e:
                found.append(Found(snap, name, e.message))
                continue
            found.append(Found(snap, name))
    return found


def check_paths(paths: list[str]) -> None:
    """Every ``--path`` is an existing directory: a typo is an error, not an empty listing."""
    for i, text in enumerate(paths):
        path = Path(text).expanduser()
        if not path.exists():
            raise InvalidInput(f"no such directory: {quote(text, 200, bare=True)}", field=f"--path[{i}]")
        if not path.is_dir():
            raise InvalidInput(f"{quote(text, 200, bare=True)} is not a directory", field=f"--path[{i}]")


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

    check_paths(args.path)
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
    for snap in snapshots:
        if snap.problem is not None:
            print(f"  {'broken':22} {snap.path}")
            print(f"  {'':22}   {snap.name or 'unknown spec'}, will not load: {snap.problem}")
            continue
        assert snap.name is not None
        print(f"  {snap.name:22} {snap.path}")
        for line in snapshot_lightning(snap.path, SPECS[snap.name].lightning, dirs):
            print(f"  {'':22}   {line}")
    return 0
