"""``qedit models`` as a user runs it on their own folders: typos in ``--path`` and snapshots that would not load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qedit.cli import main
from tests.support.snapshots import linked_snapshot


@pytest.fixture
def quiet_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only ``--path`` is searched: no models path, an empty hub cache and qedit cache."""
    monkeypatch.delenv("QEDIT_MODELS_PATH", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("QEDIT_CACHE", str(tmp_path / "cache"))


def test_a_path_that_is_not_a_directory_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--path", str(tmp_path / "nowhere")]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"qedit models: error: --path[0]: no such directory: {tmp_path / 'nowhere'}\n"
    assert captured.out == ""  # nothing listed before the error
    (tmp_path / "file").write_text("x")
    assert main(["models", "--path", str(tmp_path), "--path", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"qedit models: error: --path[1]: {tmp_path / 'file'} is not a directory\n"


def test_broken_snapshots_are_listed_as_broken_with_the_reason(
    tiny_path: Path, tmp_path: Path, quiet_roots: None, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "models"
    linked_snapshot(tiny_path, root / "good")
    no_weights = linked_snapshot(tiny_path, root / "no-weights", copy=("vae",))
    (no_weights / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    no_folder = linked_snapshot(tiny_path, root / "no-folder")
    (no_folder / "processor").unlink()
    bad_config = linked_snapshot(tiny_path, root / "nested" / "bad-config", copy=("text_encoder",))
    (bad_config / "text_encoder" / "config.json").write_text("{not json")
    cut = linked_snapshot(tiny_path, root / "cut", copy=("transformer",))
    weights = cut / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    bad_index = root / "bad-index"
    bad_index.mkdir()
    (bad_index / "model_index.json").write_text("{")
    (root / "flux").mkdir()
    (root / "flux" / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))

    assert main(["models", "--path", str(root)]) == 0
    out = capsys.readouterr().out
    listing = out[out.index("Snapshots found:") :].splitlines()[1:]
    entries = {}
    for i, line in enumerate(listing):
        if not line.startswith("   " * 8):
            kind, path = line.split()
            entries[Path(path).name] = (kind, listing[i + 1].strip())
    assert set(entries) == {"good", "no-weights", "no-folder", "bad-config", "cut", "bad-index"}  # not flux
    assert entries["good"][0] == "tiny" and entries["good"][1].startswith("--fast 4: ")
    for name, reason in (
        ("no-weights", f"tiny, will not load: missing file {no_weights}/vae/diffusion_pytorch_model.safetensors"),
        ("no-folder", f"tiny, will not load: missing file {no_folder}/processor/preprocessor_config.json"),
        ("bad-config", f"tiny, will not load: corrupt file {bad_config}/text_encoder/config.json: Expecting"),
        ("cut", f"tiny, will not load: corrupt weights file {weights}: "),
        ("bad-index", f"unknown spec, will not load: corrupt file {bad_index}/model_index.json: "),
    ):
        kind, detail = entries[name]
        assert kind == "broken" and detail.startswith(reason), (name, detail)
