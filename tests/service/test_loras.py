"""The service's LoRA parts below HTTP: settings, the allow-list built from them, the check at submit
(``LoraCheck``), and the worker's engines (instant and the real tiny engine) resolving with the same
store; the real engine keeps an adapter loaded between tasks."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from qedit.config import Settings
from qedit.errors import InvalidInput
from qedit.loras.spec import LoraSpec
from qedit.loras.store import sha256_file
from qedit.params import EditParams
from qedit.service.instant import InstantEngine
from qedit.service.loras import LoraCheck, lora_options, lora_policy
from qedit.service.records import TaskStatus
from qedit.service.wiring import Core
from qedit.service.worker import Worker, load_engine, worker_name
from tests.support.loras import LoraFolder, lora_folder
from tests.support.tasks import current, queue_edit


@pytest.fixture
def loras(tmp_path: Path, tiny_path: Path) -> LoraFolder:
    return lora_folder(tmp_path / "files", tiny_path)


def test_settings_read_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QEDIT_LORA_URL_HOSTS", "huggingface.co, civitai.com")
    monkeypatch.setenv("QEDIT_LORA_HUB_ORGS", "*")
    monkeypatch.setenv("QEDIT_LORA_DIRS", f"{tmp_path / 'a'},{tmp_path / 'b'}")
    monkeypatch.setenv("QEDIT_LIGHTNING_DIR", f"{tmp_path / 'l1'}:{tmp_path / 'l2'}")  # the engine's own variable
    s = Settings(data_dir=tmp_path)
    assert s.lora_url_hosts == ["huggingface.co", "civitai.com"] and s.lora_hub_orgs == ["*"]
    assert s.lora_dirs == [tmp_path / "a", tmp_path / "b"]
    assert s.lightning_dirs == [tmp_path / "l1", tmp_path / "l2"]
    monkeypatch.setenv("QEDIT_LIGHTNING_DIRS", str(tmp_path / "l3"))  # the setting's own name wins
    assert Settings(data_dir=tmp_path).lightning_dirs == [tmp_path / "l3"]
    assert Settings(data_dir=tmp_path, lightning_dirs=[tmp_path / "kw"]).lightning_dirs == [tmp_path / "kw"]


def test_settings_defaults_live_under_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LORA_DIRS", "LORA_CACHE_DIR", "LIGHTNING_DIRS", "LIGHTNING_DIR", "LORA_HUB_ORGS", "LORA_URL_HOSTS"):
        monkeypatch.delenv(f"QEDIT_{name}", raising=False)
    s = Settings(data_dir=tmp_path)
    assert (s.lora_dirs, s.lora_cache_dir, s.lightning_dirs) == (
        [tmp_path / "loras"],
        tmp_path / "lora-cache",
        [tmp_path / "lightning"],
    )
    assert (s.lora_hub_orgs, s.lora_url_hosts, s.lora_max_bytes, s.lora_loaded_max) == ([], [], 4 * 1024**3, 8)
    monkeypatch.setenv("QEDIT_LORA_DIRS", "")
    assert Settings(data_dir=tmp_path).lora_dirs == []  # set but empty: no local LoRAs at all


def test_the_policy_follows_the_settings(tmp_path: Path) -> None:
    s = Settings(
        data_dir=tmp_path,
        lora_hub_orgs=["org"],
        lora_url_hosts=["h.example"],
        allow_private_urls=True,
        lora_max_bytes=1 << 20,
        lora_loaded_max=2,
    )
    policy = lora_policy(s)
    assert policy.local_dirs == (tmp_path / "loras",) and not policy.any_local
    assert (policy.hub_orgs, policy.url_hosts, policy.url.allow_private, policy.url.allow_http) == (
        ("org",),
        ("h.example",),
        True,
        False,
    )
    options = lora_options(s)
    assert (options.store.max_bytes, options.store.cache_dir, options.max_loaded) == (
        1 << 20,
        tmp_path / "lora-cache",
        2,
    )
    assert options.lightning_dirs == (tmp_path / "lightning",)


def test_the_check_holds_loras_against_the_served_snapshot(tmp_path: Path, tiny_path: Path, loras: LoraFolder) -> None:
    def check(model: str, path: str) -> None:
        s = Settings(data_dir=tmp_path, model=model, lora_dirs=[loras.folder])
        LoraCheck(s).check(EditParams(prompt="x", loras=(LoraSpec(path=path),)))

    check(str(tiny_path), "style.safetensors")
    check("tiny", "kohya")  # the preset: its snapshot in the qedit cache
    check("instant", "misfit.safetensors")  # no model files: the fit is not checked
    for model in (str(tiny_path), "tiny"):
        with pytest.raises(InvalidInput, match="does not fit this model") as e:
            check(model, "misfit.safetensors")
        assert e.value.field == "loras[0]"


def test_fast_is_checked_against_the_snapshot_and_the_lightning_folders(tmp_path: Path, tiny_path: Path) -> None:
    bare = tmp_path / "bare"  # the tiny snapshot's config files, without its lightning/ folder
    for name in ("model_index.json", "transformer/config.json", "scheduler/scheduler_config.json"):
        (bare / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_path / name, bare / name)
    empty = tmp_path / "lightning"
    empty.mkdir()

    def check(model: str, lightning_dirs: list[Path]) -> None:
        s = Settings(data_dir=tmp_path, model=model, lightning_dirs=lightning_dirs)
        LoraCheck(s).check(EditParams(prompt="x", fast=8))

    check(str(tiny_path), [empty])  # the snapshot's own lightning/
    with pytest.raises(InvalidInput, match="Lightning LoRA for Qwen-Image-Edit") as e:
        check(str(bare), [empty])
    assert e.value.field == "fast" and str(empty) in e.value.message
    check(str(bare), [tiny_path / "lightning"])  # a configured folder
    check("instant", [empty])  # nothing to look at: the worker decides


# -- the worker's engines -------------------------------------------------------------------------------


def test_instant_records_loras_and_refuses_what_the_api_would(
    make_core: Callable[..., Core], loras: LoraFolder
) -> None:
    core = make_core(lora_dirs=[loras.folder])
    engine = load_engine(core.settings)
    assert isinstance(engine, InstantEngine)
    w = Worker(core, engine_factory=lambda s: engine, name=worker_name("test"), on_webhook=lambda t: None)
    good = queue_edit(core, loras=(LoraSpec(path="style.safetensors", scale=0.3),), fast=4)
    w.run_next(good)
    task = current(core, good)
    assert task.status == TaskStatus.COMPLETED, task.error
    meta = task.outputs[0].metadata
    assert json.loads(meta["loras"]) == [{"name": "style", "sha256": sha256_file(loras.style), "scale": 0.3}]
    assert (meta["fast"], meta["steps"], meta["cfg"]) == ("4", "4", "1")
    # a task that reached the store without the API's check (an older server, a script) is still refused
    bad = queue_edit(core, loras=(LoraSpec(path="escape.safetensors"),))
    w.run_next(bad)
    task = current(core, bad)
    assert task.status == TaskStatus.FAILED and task.error_reason == "invalid_input"
    assert task.error is not None and task.error.startswith("loras[0]: ") and "outside the LoRA folders" in task.error


def test_the_real_engine_keeps_a_lora_loaded_between_tasks(
    make_core: Callable[..., Core], loras: LoraFolder, tiny_path: Path
) -> None:
    core = make_core(model="tiny", device="cpu", lora_dirs=[loras.folder], lora_loaded_max=4)
    w = Worker(core, engine_factory=load_engine, name=worker_name("test"), on_webhook=lambda t: None)
    ids = [
        queue_edit(core, f"edit {i}", loras=(LoraSpec(path="style.safetensors", scale=0.5 + i),), num_inference_steps=1)
        for i in range(2)
    ]
    for task_id in ids:
        w.run_next(task_id)
    tasks = [current(core, t) for t in ids]
    assert [t.status for t in tasks] == [TaskStatus.COMPLETED] * 2, [t.error for t in tasks]
    digest = sha256_file(loras.style)
    assert [json.loads(t.outputs[0].metadata["loras"]) for t in tasks] == [
        [{"name": "style", "sha256": digest, "scale": 0.5}],
        [{"name": "style", "sha256": digest, "scale": 1.5}],
    ]
    engine = w.engine
    stats = engine.adapters.stats  # type: ignore[attr-defined]
    assert (stats.loads, stats.hits, stats.evictions) == (1, 1, 0)
    assert engine.lora_options.store.policy.local_dirs == (loras.folder,)  # type: ignore[attr-defined]
    assert engine.adapters.max_loaded == 4  # type: ignore[attr-defined]
