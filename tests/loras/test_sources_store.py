"""Where LoRAs may come from (the allow-list) and how they become files: local, URL (cached by
content), hub (huggingface_hub's cache, offline here); the Lightning files of each variant."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from qedit.errors import InvalidInput
from qedit.loras import lightning
from qedit.loras.sources import LoraPolicy, locate
from qedit.loras.store import LoraStore, sha256_file
from qedit.netfetch import UrlPolicy
from tests.support.receiver import Receiver

DEV = UrlPolicy(allow_private=True, allow_http=True)


@pytest.fixture
def lora_dir(tmp_path: Path, tiny_path: Path) -> Path:
    folder = tmp_path / "loras"
    folder.mkdir()
    (folder / "style.safetensors").write_bytes((tiny_path / "loras" / "style-kohya.safetensors").read_bytes())
    (folder / "packed").mkdir()
    (folder / "packed" / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    (folder / "packed" / "other.safetensors").write_bytes(b"x")
    (folder / "two").mkdir()
    (folder / "two" / "a.safetensors").write_bytes(b"x")
    (folder / "two" / "b.safetensors").write_bytes(b"x")
    (folder / "weights.ckpt").write_bytes(b"x")
    return folder


def test_the_service_policy_allows_its_folder_only(lora_dir: Path, tmp_path: Path) -> None:
    policy = LoraPolicy(local_dirs=(lora_dir,))
    assert locate("style.safetensors", policy, "loras[0]").path == lora_dir / "style.safetensors"
    assert locate(str(lora_dir / "style.safetensors"), policy, "f").kind == "local"
    assert locate("packed", policy, "f").path == lora_dir / "packed" / "pytorch_lora_weights.safetensors"
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    (lora_dir / "escape.safetensors").symlink_to(outside)
    refusals = {
        "../outside.safetensors": "'..'",
        str(outside): "outside the LoRA folders",
        "escape.safetensors": "outside the LoRA folders",
        "two": "holds 2 .safetensors files",
        "weights.ckpt": "not a .safetensors file",
        "missing.safetensors": "no LoRA file missing.safetensors in",
        "someorg/somerepo": "hub LoRAs from someorg are not allowed",
        "hf://someorg/somerepo": "hub LoRAs from someorg are not allowed",
        "https://example.com/a.safetensors": "LoRA URLs from example.com are not allowed",
        "http://example.com/a.safetensors": "https",
    }
    for given, words in refusals.items():
        with pytest.raises(InvalidInput) as e:
            locate(given, policy, "loras[0]")
        assert words in str(e.value) and e.value.field == "loras[0]", given


def test_hub_organisations_and_url_hosts_are_opt_in() -> None:
    policy = LoraPolicy(hub_orgs=("lightx2v",), url_hosts=("example.com", ".cdn.example.net"))
    hub = locate("lightx2v/Qwen-Image-Lightning/Qwen-Image-Lightning-8steps-V1.0.safetensors", policy, "f")
    assert (hub.kind, hub.repo_id, hub.filename) == (
        "hub",
        "lightx2v/Qwen-Image-Lightning",
        "Qwen-Image-Lightning-8steps-V1.0.safetensors",
    )
    assert locate("LightX2V/Other", policy, "f").repo_id == "LightX2V/Other"
    assert locate("https://example.com/x/style.safetensors", policy, "f").kind == "url"
    assert locate("https://a.cdn.example.net/style.safetensors", policy, "f").kind == "url"
    url = "https://huggingface.co/lightx2v/Qwen-Image-Lightning/resolve/main/sub/x.safetensors"
    resolved = locate(url, policy, "f")  # a hub URL counts as the hub when the owner is allowed
    assert (resolved.kind, resolved.repo_id, resolved.revision, resolved.filename) == (
        "hub",
        "lightx2v/Qwen-Image-Lightning",
        "main",
        "sub/x.safetensors",
    )
    with pytest.raises(InvalidInput, match="loopback"):
        locate("https://127.0.0.1/a.safetensors", LoraPolicy(url_hosts=("*",)), "f")


def test_the_operator_policy_takes_any_local_file(lora_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(lora_dir.parent)
    source = locate("loras/style.safetensors", LoraPolicy.operator(), "--lora")
    assert source.path == Path.cwd() / "loras" / "style.safetensors" and source.name == "style"


@pytest.fixture
def host(tiny_path: Path) -> Iterator[Receiver]:
    lora = (tiny_path / "loras" / "style-comfyui.safetensors").read_bytes()
    r = Receiver(
        files={"/style.safetensors": lora, "/cut.safetensors": lora[: len(lora) // 2], "/page.html": b"<html>" * 99}
    )
    yield r
    r.close()


def test_url_loras_are_downloaded_once_and_kept_by_content(host: Receiver, tmp_path: Path, tiny_path: Path) -> None:
    store = LoraStore(LoraPolicy(url_hosts=("127.0.0.1",), url=DEV), tmp_path / "cache")
    url = host.url + "/style.safetensors"
    anatomy = store.check(url, "loras[0]", json.loads((tiny_path / "transformer" / "config.json").read_text()))
    assert anatomy.format == "comfyui"
    assert not (tmp_path / "cache" / "files").exists()  # the check read the header only
    first = store.resolve(url, "loras[0]")
    assert first.sha256 == sha256_file(tiny_path / "loras" / "style-comfyui.safetensors")
    assert first.file == tmp_path / "cache" / "files" / f"{first.sha256}.safetensors"
    host.files.clear()  # the host is gone: the cache answers
    again = store.resolve(url, "loras[0]")
    assert again.file == first.file and again.sha256 == first.sha256
    assert store.check(url, "loras[0]").format == "comfyui"


def test_bad_downloads_are_refused_and_not_kept(host: Receiver, tmp_path: Path) -> None:
    store = LoraStore(LoraPolicy(url_hosts=("127.0.0.1",), url=DEV), tmp_path / "cache", max_bytes=100_000)
    cases = {"/cut.safetensors": "truncated", "/page.html": "not a safetensors file", "/gone.safetensors": "404"}
    for path, words in cases.items():
        with pytest.raises(InvalidInput, match=words) as e:
            store.resolve(host.url + path, "loras[1]")
        assert e.value.field == "loras[1]"
    small = LoraStore(LoraPolicy(url_hosts=("127.0.0.1",), url=DEV), tmp_path / "cache", max_bytes=1000)
    with pytest.raises(InvalidInput, match="at most 1000"):
        small.resolve(host.url + "/style.safetensors", "loras[0]")
    with pytest.raises(InvalidInput, match="at most 1000"):
        small.check(host.url + "/style.safetensors", "loras[0]")
    assert [p.name for p in (tmp_path / "cache" / "files").iterdir()] == []


def test_hub_loras_come_from_huggingface_hubs_cache(tmp_path: Path, tiny_path: Path, monkeypatch) -> None:
    """No network here: a repo already in the hub cache (as ``hf download`` leaves it) is served offline."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    snap = cache / "models--someorg--styles" / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snap.mkdir(parents=True)
    (snap / "ink.safetensors").write_bytes((tiny_path / "loras" / "style-diffsynth.safetensors").read_bytes())
    (cache / "models--someorg--styles" / "refs").mkdir()
    (cache / "models--someorg--styles" / "refs" / "main").write_text(snap.name)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    store = LoraStore(LoraPolicy(hub_orgs=("someorg",)), tmp_path / "cache")
    assert store.check("someorg/styles/ink.safetensors", "loras[0]").format == "diffsynth"
    lora = store.resolve("someorg/styles/ink.safetensors", "loras[0]")
    assert lora.file.read_bytes() == (snap / "ink.safetensors").read_bytes() and lora.name == "ink"
    with pytest.raises(InvalidInput, match=r"someorg/styles/missing\.safetensors") as e:
        store.resolve("someorg/styles/missing.safetensors", "loras[0]")
    assert e.value.field == "loras[0]"


def test_lightning_files_are_found_per_variant_newest_bf16_first(tmp_path: Path) -> None:
    names = [
        "Qwen-Image-Edit-Lightning-8steps-V1.0.safetensors",
        "Qwen-Image-Edit-Lightning-8steps-V1.0-bf16.safetensors",
        "Qwen-Image-Edit-Lightning-8steps-V2.0.safetensors",
        "Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors",
        "Qwen-Image-Lightning-4steps-V1.0.safetensors",  # text-to-image: not an edit model's
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    dirs = (tmp_path / "absent", tmp_path)
    assert lightning.find("Qwen-Image-Edit", 8, dirs, hub_cache=False).name == names[2]
    assert lightning.find("Qwen-Image-Edit", 4, dirs, hub_cache=False) is None
    assert lightning.find("Qwen-Image-Edit-2509", 4, dirs, hub_cache=False).name == names[3]
    assert set(lightning.available("Qwen-Image-Edit-2511", dirs)) == set()
    (tmp_path / names[2]).unlink()
    assert lightning.find("Qwen-Image-Edit", 8, dirs, hub_cache=False).name == names[1]


def test_fused_lightning_snapshots_are_recognised() -> None:
    plain = {"base_shift": 0.5, "max_shift": 0.9, "shift_terminal": 0.02}
    recipe = {"base_shift": math.log(3), "max_shift": math.log(3), "shift_terminal": None}
    assert lightning.fused_steps("Qwen/Qwen-Image-Edit-2509 0123abc", {}, plain) is None
    assert lightning.fused_steps("someone/Qwen-Image-Edit-2509-Lightning-4steps 0123abc", {}, plain) == 4
    assert lightning.fused_steps("/models/edit-fast", {}, recipe) == 8
    assert lightning.fused_steps("/models/whatever", {"_qedit_lightning_steps": 4}, plain) == 4


def test_lightning_folder_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QEDIT_LIGHTNING_DIR", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert lightning.default_dirs() == (tmp_path / "a", tmp_path / "b")
    monkeypatch.delenv("QEDIT_LIGHTNING_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert lightning.default_dirs() == (tmp_path / "qedit" / "lightning",)


def test_a_service_policy_never_shows_its_folders(lora_dir: Path, tmp_path: Path) -> None:
    store = LoraStore(LoraPolicy(local_dirs=(lora_dir,), show_paths=False), tmp_path / "cache")
    (lora_dir / "cut.safetensors").write_bytes((lora_dir / "style.safetensors").read_bytes()[:100])
    for given in ("missing.safetensors", "cut.safetensors", "../x.safetensors", "someorg/repo"):
        with pytest.raises(InvalidInput) as e:
            store.check(given, "loras[0]")
        assert str(lora_dir) not in str(e.value) and str(tmp_path) not in str(e.value), str(e.value)
    assert store.resolve("style.safetensors", "loras[0]").shown == "style.safetensors"


def test_a_hub_lora_not_yet_cached_is_checked_from_the_hubs_header_alone(
    tmp_path: Path, tiny_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No network here: the hub's answer to huggingface_hub's header request is played back from a real
    file's header (the only stand-in: the hub itself cannot be reached)."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import SafetensorsFileMetadata, TensorInfo

    from qedit.loras.header import read_header

    header = read_header(tiny_path / "loras" / "style-kohya.safetensors", "f")
    asked = []

    def parse(self: HfApi, repo_id: str, filename: str, **kw: object) -> SafetensorsFileMetadata:
        asked.append((repo_id, filename, kw.get("revision")))
        tensors = {
            n: TensorInfo(dtype=t.dtype, shape=list(t.shape), data_offsets=(0, t.nbytes))
            for n, t in header.tensors.items()
        }
        return SafetensorsFileMetadata(metadata={}, tensors=tensors)

    monkeypatch.setattr(HfApi, "parse_safetensors_file_metadata", parse)
    store = LoraStore(LoraPolicy(hub_orgs=("someorg",)), tmp_path / "cache")
    config = json.loads((tiny_path / "transformer" / "config.json").read_text())
    assert store.check("someorg/styles/ink.safetensors", "loras[0]", config).format == "kohya"
    assert asked == [("someorg/styles", "ink.safetensors", None)]
