"""Which member of the family a snapshot is, from its ``model_index.json``: torch-free.

The API needs to know how many images the served model takes before it queues anything, and
``qedit models`` lists snapshots, without loading a model; the loader asks the same question
before it reads a weight. One answer, here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qedit.errors import ModelLoadError
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
