"""What ``qedit.models.snapshot`` says about a snapshot without loading it: whole or broken, and its id."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qedit.errors import ModelLoadError
from qedit.models.snapshot import canonical_model, check_files
from tests.support.snapshots import linked_snapshot


def test_a_spec_name_is_its_hub_id_and_a_folder_its_resolved_path(tmp_path: Path, monkeypatch) -> None:
    assert canonical_model("tiny") == "tiny"
    assert canonical_model("qwen-image-edit-2509") == "Qwen/Qwen-Image-Edit-2509"
    assert canonical_model("someone/model") == "someone/model"
    (tmp_path / "snap").mkdir()
    monkeypatch.chdir(tmp_path)
    assert {canonical_model(n) for n in ("snap", "./snap/", str(tmp_path / "snap"))} == {str(tmp_path / "snap")}


def test_a_shard_the_index_names_must_exist(tiny_path: Path, tmp_path: Path) -> None:
    snap = linked_snapshot(tiny_path, tmp_path / "snap", copy=("vae",))
    weights = snap / "vae" / "diffusion_pytorch_model.safetensors"
    shard = weights.with_name("diffusion_pytorch_model-00001-of-00002.safetensors")
    weights.rename(shard)
    index = {"weight_map": {"a": shard.name, "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}
    (snap / "vae" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match=r"missing file .*vae/diffusion_pytorch_model-00002-of-00002.safetensors"):
        check_files(snap)


def test_checking_a_snapshot_imports_no_torch(tiny_path: Path) -> None:
    """``qedit models`` lists snapshots without the seconds a torch import costs."""
    code = (
        "import sys, pathlib; from qedit.models.snapshot import check_files; "
        f"check_files(pathlib.Path({str(tiny_path)!r})); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
