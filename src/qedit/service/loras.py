"""LoRAs in the service: the operator's allow-list built from the settings, and the check at submit.

A LoRA changes what the model does and may make the server download gigabytes, so a request may
name only what the operator allowed: files in the LoRA folders (``lora_dirs``), repos of listed hub
organisations (``lora_hub_orgs``), URLs on listed hosts (``lora_url_hosts``, fetched SSRF-safely
under the same private/http rules as image URLs). The API (at submit) and every worker (the engine,
or the ``instant`` stand-in) build their store through ``lora_options``, so a name the API accepted
resolves to the same file in the worker, and one it refused is refused there too.

``LoraCheck`` is what submit asks before anything is stored or queued: each LoRA allowed, a
safetensors LoRA (its header only: from disk, or the first bytes of an URL's stream), within the size
cap and, when the served snapshot is on disk, of its transformer's shapes; and ``fast``'s Lightning
file where the worker will look for it. A model known only by hub id and not yet downloaded skips
the checks that need its files: the worker applies the same rules after loading and fails the task,
naming the same field.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from qedit.config import Settings
from qedit.loras.options import LoraOptions
from qedit.loras.sources import LoraPolicy
from qedit.loras.store import LoraStore
from qedit.models.snapshot import check_fast, local_snapshot, transformer_config
from qedit.netfetch import UrlPolicy
from qedit.params import EditParams


def lora_policy(settings: Settings) -> LoraPolicy:
    return LoraPolicy(
        local_dirs=tuple(settings.lora_dirs or ()),
        hub_orgs=tuple(settings.lora_hub_orgs),
        url_hosts=tuple(settings.lora_url_hosts),
        any_local=False,
        url=UrlPolicy(allow_private=settings.allow_private_urls, allow_http=settings.allow_http_urls),
        show_paths=False,  # clients are told the names they gave, never the server's folders
    )


def lora_options(settings: Settings) -> LoraOptions:
    """The store, Lightning folders and adapter LRU bounds of this service (API and workers alike)."""
    assert settings.lora_cache_dir is not None and settings.lightning_dirs is not None  # filled by Settings
    store = LoraStore(lora_policy(settings), settings.lora_cache_dir, max_bytes=settings.lora_max_bytes)
    return LoraOptions(
        store=store,
        lightning_dirs=tuple(settings.lightning_dirs),
        max_loaded=settings.lora_loaded_max,
        max_loaded_bytes=settings.lora_loaded_max_bytes,
    )


class LoraCheck:
    """``loras`` and ``fast`` of a request against this server's rules and its model's files.

    Blocking (file reads, maybe an URL's first bytes): the API runs it in a threadpool. The served
    transformer's config is read once it is found; until then (a tiny preset its worker has not
    written yet, a hub model not downloaded yet) it is looked for again on each request that needs it.
    """

    def __init__(self, settings: Settings, options: LoraOptions | None = None) -> None:
        self.settings = settings
        self.options = options or lora_options(settings)
        self._config: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def served_snapshot(self) -> Path | None:
        """The served model's snapshot directory if it is on disk; None for ``instant`` or not yet there."""
        return None if self.settings.model == "instant" else local_snapshot(self.settings.model)

    def transformer_config(self) -> dict[str, Any] | None:
        with self._lock:
            if self._config is None:
                self._config = transformer_config(self.served_snapshot())
            return self._config

    def check(self, params: EditParams) -> None:
        """Raises ``InvalidInput`` naming ``loras[i]`` or ``fast``; returns when the request may be queued."""
        if params.loras:
            config = self.transformer_config()
            for i, spec in enumerate(params.loras):
                self.options.store.check(spec.path, f"loras[{i}]", config)
        if params.fast is not None:
            snapshot = self.served_snapshot()
            if snapshot is not None:
                check_fast(self.settings.model, snapshot, params.fast, self.options.lightning_dirs)
