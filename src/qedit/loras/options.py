"""What an engine needs to know about LoRAs: the store, the Lightning folders, the LRU's bounds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qedit.loras import lightning
from qedit.loras.sources import LoraPolicy
from qedit.loras.store import LoraStore
from qedit.models.snapshot import cache_root

DEFAULT_MAX_LOADED = 8
DEFAULT_MAX_LOADED_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class LoraOptions:
    store: LoraStore
    lightning_dirs: tuple[Path, ...] = field(default_factory=lightning.default_dirs)
    max_loaded: int = DEFAULT_MAX_LOADED  # adapters kept on the transformer between edits
    max_loaded_bytes: int = DEFAULT_MAX_LOADED_BYTES  # and their weights' bytes

    @classmethod
    def operator(cls) -> LoraOptions:
        """The CLI's and the Python API's default: the user's own files, any hub repo or https URL."""
        return cls(store=LoraStore(LoraPolicy.operator(), cache_root() / "loras"))
