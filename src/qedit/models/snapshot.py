"""Which member of the family a snapshot is, from its ``model_index.json``: torch-free.

The API needs to know how many images the served model takes before it queues anything, and
``qedit models`` lists snapshots, without loading a model; the loader asks the same question
before it reads a weight. One answer, here. The same goes for what a LoRA must fit (the
transformer's ``config.json``) and whether ``fast`` can run (the variant's Lightning file): the API
checks both at submit, from the snapshot's files, when the snapshot is already on disk.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qedit.errors import ModelLoadError, QeditError
from qedit.loras import lightning
from qedit.models.specs import EDIT_CLASS, PLUS_CLASS, SPECS, ModelSpec, get_spec


def read_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"missing file {file}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"corrupt file {file}: {e}") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"corrupt file {file}: expected a JSON object")
    return data


def detect_spec(path: Path) -> ModelSpec:
    """Which member of the family a snapshot is, from its own files."""
    index = read_json(path / "model_index.json")
    if isinstance(index.get("_qedit_spec"), str):
        return get_spec(index["_qedit_spec"])
    cls = index.get("_class_name")
    if cls == EDIT_CLASS:
        return get_spec("qwen-image-edit")
    if cls == PLUS_CLASS:
        transformer = read_json(path / "transformer" / "config.json")
        return get_spec("qwen-image-edit-2511" if transformer.get("zero_cond_t") else "qwen-image-edit-2509")
    raise ModelLoadError(
        f"{path / 'model_index.json'}: _class_name {cls!r} is not a Qwen-Image-Edit pipeline "
        f"({EDIT_CLASS} or {PLUS_CLASS})"
    )


def default_model() -> str:
    """$QEDIT_MODEL, else the tiny preset (so a fresh install runs without downloading 58 GB)."""
    return os.environ.get("QEDIT_MODEL", "tiny")


def spec_of(model: str) -> ModelSpec | None:
    """The spec of a model reference without loading it: a spec name, or a snapshot directory's own
    files; None for a hub id or a broken snapshot (the loader then reports the problem)."""
    if model in SPECS:
        return SPECS[model]
    path = Path(model).expanduser()
    if path.is_dir():
        try:
            return detect_spec(path)
        except ModelLoadError:
            return None
    return None


# -- a model's files on disk, without loading, writing or downloading anything -----------------------


def cache_root() -> Path:
    """``$QEDIT_CACHE``, else ``~/.cache/qedit``: where the tiny presets are written (``models/<name>``)."""
    return Path(os.environ.get("QEDIT_CACHE") or Path.home() / ".cache" / "qedit")


def local_snapshot(model: str) -> Path | None:
    """The snapshot directory ``model`` names, if it is on disk already; None otherwise.

    Mirrors ``qedit.engine.loader.locate``: the tiny presets live in the qedit cache, a directory is
    itself, a spec name or hub id is looked up in huggingface_hub's cache (no network).
    """
    path: Path | None
    if model in SPECS and SPECS[model].tiny:
        path = cache_root() / "models" / model
    elif Path(model).expanduser().is_dir():
        path = Path(model).expanduser()
    else:
        hub_id = SPECS[model].hub_id if model in SPECS else model
        if not hub_id or "/" not in hub_id or model.startswith((".", "/", "~")):
            return None
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = try_to_load_from_cache(hub_id, "model_index.json")
        except Exception:  # a malformed id: the loader says what is wrong with it
            return None
        path = Path(cached).parent if isinstance(cached, str) else None
    return path if path is not None and (path / "model_index.json").is_file() else None


def transformer_config(snapshot: Path | None) -> dict[str, Any] | None:
    """The snapshot's ``transformer/config.json`` (the shapes a LoRA must fit); None if unreadable."""
    if snapshot is None:
        return None
    try:
        return read_json(snapshot / "transformer" / "config.json")
    except ModelLoadError:
        return None


def snapshot_name(model: str, snapshot: Path) -> str:
    """What ``lightning.fused_steps`` reads a fused snapshot's step count from, exactly as the loader
    builds it: a directory's own name, else the model id (a real spec's hub id) and the folder's name."""
    spec = SPECS.get(model)
    if not (spec is not None and spec.tiny) and Path(model).expanduser().is_dir():
        return snapshot.resolve().name
    model_id = spec.hub_id if spec is not None and not spec.tiny and spec.hub_id else model
    return f"{model_id} {snapshot.resolve().name}"


def check_fast(model: str, snapshot: Path, fast: int, lightning_dirs: tuple[Path, ...]) -> None:
    """``fast`` can run on ``model`` (whose snapshot is ``snapshot``): the Lightning file is where the
    engine will look for it, or the snapshot has that recipe fused in. A snapshot that cannot be read
    is left to the loader, whose message names the broken file."""
    try:
        spec = detect_spec(snapshot)
        index = read_json(snapshot / "model_index.json")
        scheduler = read_json(snapshot / "scheduler" / "scheduler_config.json")
    except QeditError:
        return
    fused = lightning.fused_steps(snapshot_name(model, snapshot), index, scheduler)
    lightning.recipe_file(model, spec.lightning, fast, fused, lightning.search_dirs(snapshot, lightning_dirs))
