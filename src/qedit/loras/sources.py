"""Where a LoRA may come from: the operator's allow-list, applied before anything is read.

A LoRA is code-like input: its weights change what the model does, and fetching one makes the
server download gigabytes from wherever a client points. So the service accepts, by default, only
files in its own LoRA folder; hub organisations and URL hosts are opt-in, and URLs still go through
the SSRF-safe fetcher (``qedit.netfetch``). The CLI's user is the operator: any local file, any hub
repo, any https URL.

A source is one of:
- a local ``.safetensors`` file, or a folder holding one (``pytorch_lora_weights.safetensors``, the
  name diffusers writes, wins when there are several); for the service, a name inside a LoRA folder
- a hub repo: ``owner/repo``, ``owner/repo/sub/file.safetensors`` or ``hf://owner/repo[/file]``;
  ``https://huggingface.co/owner/repo/resolve/REV/file`` counts as the hub when the owner is allowed
- an https URL whose host is allowed
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from qedit.errors import InvalidInput
from qedit.netfetch import UrlPolicy, check_url

PREFERRED_FILE = "pytorch_lora_weights.safetensors"  # what diffusers' save_lora_weights writes
ANY = "*"
_HUB = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:/(?P<file>[^\s]+\.safetensors))?$")
_HF_URL = re.compile(r"^/(?P<repo>[\w.-]+/[\w.-]+)/(?:resolve|blob)/(?P<rev>[^/]+)/(?P<file>.+\.safetensors)$")


@dataclass(frozen=True)
class LoraPolicy:
    """The allow-list. ``ANY`` ("*") in ``hub_orgs`` or ``url_hosts`` allows every one."""

    local_dirs: tuple[Path, ...] = ()
    hub_orgs: tuple[str, ...] = ()
    url_hosts: tuple[str, ...] = ()
    any_local: bool = False  # local files anywhere (the CLI), not only inside local_dirs
    url: UrlPolicy = field(default_factory=UrlPolicy)
    show_paths: bool = True  # False for the service: its clients are not told where its folders are

    @classmethod
    def operator(cls, local_dirs: tuple[Path, ...] = ()) -> LoraPolicy:
        """The CLI's: its user owns the machine, so only the URL scheme rule remains."""
        return cls(local_dirs=local_dirs, hub_orgs=(ANY,), url_hosts=(ANY,), any_local=True, url=UrlPolicy(True))

    def hub_allowed(self, repo_id: str) -> bool:
        org = repo_id.split("/", 1)[0].lower()
        return ANY in self.hub_orgs or org in {o.lower() for o in self.hub_orgs}

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        allowed = {h.lower().rstrip(".") for h in self.url_hosts}
        return ANY in allowed or host in allowed or any(h.startswith(".") and host.endswith(h) for h in allowed)

    @property
    def folders(self) -> str:
        if not self.show_paths:
            return "the server's LoRA folder"
        return ", ".join(str(d) for d in self.local_dirs) or "no LoRA folder"

    def describe(self) -> str:
        parts = []
        if self.local_dirs:
            parts.append("files in " + self.folders)
        if self.hub_orgs:
            parts.append("hub organisations " + ", ".join(self.hub_orgs))
        if self.url_hosts:
            parts.append("URLs on " + ", ".join(self.url_hosts))
        return "; ".join(parts) or "none"


@dataclass(frozen=True)
class Source:
    """A located LoRA: exactly one of ``path`` (local), ``repo_id`` (hub) or ``url`` is set."""

    kind: Literal["local", "hub", "url"]
    given: str
    path: Path | None = None
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None
    url: str | None = None

    @property
    def name(self) -> str:
        """A short human name: the file's stem (or the repo's name)."""
        if self.path is not None:
            return self.path.stem
        if self.filename:
            return Path(self.filename).stem
        if self.repo_id:
            return self.repo_id.split("/", 1)[1]
        return Path(unquote(urlsplit(self.url or "").path)).stem or "lora"


def _pick_in_folder(folder: Path, given: str, field: str) -> Path:
    if (folder / PREFERRED_FILE).is_file():
        return folder / PREFERRED_FILE
    files = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if len(files) == 1:
        return files[0]
    if not files:
        raise InvalidInput(f"folder {given} holds no .safetensors file", field=field)
    names = ", ".join(p.name for p in files[:5])
    raise InvalidInput(f"folder {given} holds {len(files)} .safetensors files ({names}); name one", field=field)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.expanduser().resolve())
    except (ValueError, OSError):
        return False
    return True


def _local(given: str, policy: LoraPolicy, field: str) -> Path | None:
    """The local file ``given`` names, or None if there is none (then it may be a hub id)."""
    raw = Path(given).expanduser()
    if raw.is_absolute() or policy.any_local:
        candidates = [raw if raw.is_absolute() else Path.cwd() / raw]
    else:
        if ".." in raw.parts:
            raise InvalidInput(f"{given!r} must not climb out of the LoRA folder ('..')", field=field)
        candidates = [d.expanduser() / raw for d in policy.local_dirs]
    for candidate in candidates:
        if not candidate.exists():
            continue
        if not policy.any_local and not any(_inside(candidate, d) for d in policy.local_dirs):
            raise InvalidInput(
                f"{given} is outside the LoRA folders this server allows ({policy.describe()})", field=field
            )
        file = _pick_in_folder(candidate, given, field) if candidate.is_dir() else candidate
        if file.suffix != ".safetensors":
            raise InvalidInput(f"{given} is not a .safetensors file (pickled weights are refused)", field=field)
        return file
    return None


def locate(given: str, policy: LoraPolicy, field: str) -> Source:
    """Classify ``given`` and apply the allow-list; nothing is downloaded or read here."""
    given = given.strip()
    if given.startswith(("http://", "https://")):
        url = check_url(given, policy.url, field)
        hf = _HF_URL.match(url.path) if url.host in ("huggingface.co", "hf.co") else None
        if hf and policy.hub_allowed(hf["repo"]) and not policy.host_allowed(url.host):
            return Source("hub", given, repo_id=hf["repo"], filename=unquote(hf["file"]), revision=hf["rev"])
        if not policy.host_allowed(url.host):
            raise InvalidInput(
                f"LoRA URLs from {url.host} are not allowed on this server (allowed: {policy.describe()})", field=field
            )
        return Source("url", given, url=given)
    if given.startswith("hf://"):
        hub = _HUB.match(given.removeprefix("hf://"))
        if not hub:
            raise InvalidInput(f"expected hf://owner/repo[/file.safetensors], got {given!r}", field=field)
        return _hub(given, hub["repo"], hub["file"], policy, field)
    file = _local(given, policy, field)
    if file is not None:
        return Source("local", given, path=file)
    where = "" if policy.any_local else f" in {policy.folders}"
    hub = _HUB.match(given)
    if hub and not _looks_local(given, policy) and not given.startswith((".", "/", "~")):
        if policy.hub_allowed(hub["repo"]):
            return Source("hub", given, repo_id=hub["repo"], filename=hub["file"])
        raise InvalidInput(
            f"no LoRA file {given}{where}, and hub LoRAs from {hub['repo'].split('/')[0]} are not allowed "
            f"(allowed: {policy.describe()})",
            field=field,
        )
    raise InvalidInput(f"no LoRA file {given}{where}", field=field)


def _looks_local(given: str, policy: LoraPolicy) -> bool:
    """``loras/styel.safetensors`` is a local file with a typo, not a hub repo: asking the hub would cost
    seconds of retries (or hang offline) before saying so. A hub *file* has a repo before it
    (``owner/repo/file.safetensors``), unless that folder exists here, for a user's own files."""
    if not given.endswith(".safetensors"):
        return False
    return given.count("/") == 1 or (policy.any_local and Path(given).expanduser().parent.is_dir())


def _hub(given: str, repo_id: str, filename: str | None, policy: LoraPolicy, field: str) -> Source:
    if not policy.hub_allowed(repo_id):
        raise InvalidInput(
            f"hub LoRAs from {repo_id.split('/')[0]} are not allowed on this server (allowed: {policy.describe()})",
            field=field,
        )
    return Source("hub", given, repo_id=repo_id, filename=filename)
