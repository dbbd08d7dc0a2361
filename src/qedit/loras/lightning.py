"""The few-step recipe: lightx2v's Qwen-Image-Lightning LoRAs, 4 or 8 steps without CFG.

Each variant has its own files (``Qwen-Image-Edit-Lightning-8steps-V1.0-bf16.safetensors``,
``Qwen-Image-Edit-2509-Lightning-4steps-...``, ``Qwen-Image-Edit-2511-Lightning-...``); they are
looked for in the snapshot's own ``lightning/`` folder, then in the configured folders, then in
huggingface_hub's cache (where ``hf download lightx2v/...`` puts them). The scheduler Lightning was
distilled with shifts by a constant ln 3 (so 4 steps run at sigmas 1, 0.9, 0.75, 0.5) with no
terminal stretch, and true CFG is off: one transformer pass per step.

A snapshot with a Lightning LoRA already fused in is recognised by its name (``...Lightning...
8steps``), its scheduler config (the shifts above) or ``_qedit_lightning_steps`` in its
``model_index.json``; it then runs the recipe without loading anything.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from qedit.config import default_data_dir
from qedit.errors import InvalidInput

STEPS = (4, 8)
CFG = 1.0
LN3 = math.log(3)
SCHEDULER_OVERRIDES: dict[str, Any] = {
    "base_shift": LN3,
    "max_shift": LN3,
    "shift_terminal": None,
    "use_dynamic_shifting": True,
    "time_shift_type": "exponential",
}
# family -> (hub repo, folder in it) of lightx2v's releases, for the hint and the hub-cache lookup
HUB: dict[str, tuple[str, str]] = {
    "Qwen-Image-Edit": ("lightx2v/Qwen-Image-Lightning", ""),
    "Qwen-Image-Edit-2509": ("lightx2v/Qwen-Image-Lightning", "Qwen-Image-Edit-2509/"),
    "Qwen-Image-Edit-2511": ("lightx2v/Qwen-Image-Edit-2511-Lightning", ""),
}
_VERSION = re.compile(r"-V(\d+(?:\.\d+)*)", re.IGNORECASE)
_STEPS_IN_NAME = re.compile(r"(\d+)[-_ ]?steps?", re.IGNORECASE)


def file_name(family: str, steps: int) -> str:
    """The name lightx2v gives the bf16 file (the one to download)."""
    return f"{family}-Lightning-{steps}steps-V1.0-bf16.safetensors"


def _pattern(family: str, steps: int) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(family)}-Lightning-{steps}steps\b.*\.safetensors$", re.IGNORECASE)


def _preference(path: Path) -> tuple:
    """Newest version first, then bf16 (half the size of fp32, same results in bf16)."""
    m = _VERSION.search(path.name)
    version = tuple(int(p) for p in m.group(1).split(".")) if m else ()
    return (tuple(-v for v in version), "bf16" not in path.name.lower(), path.name)


def default_dirs() -> tuple[Path, ...]:
    """``$QEDIT_LIGHTNING_DIR`` (``:``-separated), else the data folder's ``lightning/``."""
    env = os.environ.get("QEDIT_LIGHTNING_DIR")
    if env:
        return tuple(Path(p).expanduser() for p in env.split(os.pathsep) if p)
    return (default_data_dir() / "lightning",)


def search_dirs(snapshot: Path | None, dirs: tuple[Path, ...]) -> tuple[Path, ...]:
    return ((snapshot / "lightning",) if snapshot is not None else ()) + tuple(dirs)


def find(family: str, steps: int, dirs: tuple[Path, ...], *, hub_cache: bool = True) -> Path | None:
    pattern = _pattern(family, steps)
    found = [
        p
        for d in dirs
        if d.is_dir()
        for p in (*d.glob("*.safetensors"), *d.glob("*/*.safetensors"))
        if pattern.match(p.name) and p.is_file()
    ]
    if found:
        return sorted(found, key=_preference)[0]
    if hub_cache and family in HUB:
        from huggingface_hub import try_to_load_from_cache

        repo, folder = HUB[family]
        cached = try_to_load_from_cache(repo, folder + file_name(family, steps))
        if isinstance(cached, str):
            return Path(cached)
    return None


def available(family: str, dirs: tuple[Path, ...]) -> dict[int, Path]:
    """The Lightning files found for a family, by step count (what ``qedit models`` lists)."""
    return {n: p for n in STEPS if (p := find(family, n, dirs)) is not None}


def missing(family: str, steps: int, dirs: tuple[Path, ...]) -> InvalidInput:
    repo, folder = HUB.get(family, ("lightx2v/Qwen-Image-Lightning", ""))
    where = dirs[-1] if dirs else Path("lightning")
    return InvalidInput(
        f"needs the {steps}-step Lightning LoRA for {family}: download {folder}{file_name(family, steps)} "
        f"from https://huggingface.co/{repo} into {where} (or set QEDIT_LIGHTNING_DIR); "
        f"looked in {', '.join(str(d) for d in dirs) or 'no folder'}",
        field="fast",
    )


def recipe_file(model: str, family: str, fast: int, fused: int | None, dirs: tuple[Path, ...]) -> Path | None:
    """The Lightning file ``fast`` loads, or None when ``model`` has that recipe fused in; the engine at
    edit time and the CLI and API before queueing refuse the same way, naming ``fast``."""
    if fused is not None:
        if fast != fused:
            raise InvalidInput(
                f"{model} has the {fused}-step Lightning LoRA fused in; fast={fast} needs the base model", field="fast"
            )
        return None
    file = find(family, fast, dirs)
    if file is None:
        raise missing(family, fast, dirs)
    return file


def scheduler_config(base: dict[str, Any]) -> dict[str, Any]:
    return {**base, **SCHEDULER_OVERRIDES}


def is_lightning_scheduler(config: dict[str, Any]) -> bool:
    try:
        shifts = abs(float(config["base_shift"]) - LN3) < 1e-3 and abs(float(config["max_shift"]) - LN3) < 1e-3
    except (KeyError, TypeError, ValueError):
        return False
    return shifts and not config.get("shift_terminal")


def fused_steps(name: str, index: dict[str, Any], scheduler: dict[str, Any]) -> int | None:
    """The step count of a snapshot with a Lightning LoRA fused in; None for an ordinary snapshot.

    ``name`` is what the snapshot is called: its folder, or the hub id it came from (a hub cache
    folder is named by commit).
    """
    marked = index.get("_qedit_lightning_steps")
    if isinstance(marked, int) and marked > 0:
        return marked
    if "lightning" not in name.lower() and not is_lightning_scheduler(scheduler):
        return None
    m = _STEPS_IN_NAME.search(name)
    return int(m.group(1)) if m else 8
