"""Model snapshots for tests of discovery and loading: the tiny preset's folders, linked or copied."""

from __future__ import annotations

import shutil
from pathlib import Path


def linked_snapshot(tiny: Path, target: Path, *, copy: tuple[str, ...] = ()) -> Path:
    """A snapshot at ``target`` whose folders link to the tiny preset's, except ``copy`` (copied, to be broken)."""
    target.mkdir(parents=True)
    shutil.copy(tiny / "model_index.json", target / "model_index.json")
    for folder in ("transformer", "vae", "text_encoder", "tokenizer", "processor", "scheduler"):
        if folder in copy:
            shutil.copytree(tiny / folder, target / folder)
        else:
            (target / folder).symlink_to(tiny / folder, target_is_directory=True)
    return target
