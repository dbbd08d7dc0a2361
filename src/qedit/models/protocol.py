"""The engine protocol: what an editor takes, what it gives back, and how it reports progress.

``EditRequest`` is what callers hand to ``Engine.edit``: validated ``EditParams`` plus decoded
pixels. It lives outside ``qedit.engine`` (torch-free) because the worker, the CLI, the sessions and
the dry-run ``instant`` editor all speak it without loading a model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from qedit.params import EditParams

StepCallback = Callable[[int, int, float], None]
"""Called after each denoising step with (step, total, elapsed seconds since denoising began)."""


class CancelToken:
    """Set from any thread; the engine checks it between steps and raises ``EditCancelled``."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class EditRequest:
    """One edit: parameters plus decoded RGB inputs (1-3 images; an optional mask, mode "L")."""

    params: EditParams
    images: tuple[Image.Image, ...]
    mask: Image.Image | None = None
    parent: str | None = None  # the task or file the last image came from, recorded in the metadata
    history: tuple[dict, ...] = ()  # earlier edits of the last image (its metadata's chain), oldest first


@dataclass(frozen=True)
class EditedImage:
    image: Image.Image
    seed: int
    metadata: dict[str, str]  # embedded into the written file (see qedit.imageio)


@dataclass(frozen=True)
class EditResult:
    outputs: tuple[EditedImage, ...]
    model: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    stats: dict[str, float] = field(default_factory=dict)  # counters: transformer_calls/passes, cached_passes, ...

    @property
    def images(self) -> list[Image.Image]:
        return [o.image for o in self.outputs]


class EditEngine(Protocol):
    """What the worker, the CLI and the tests call: the real ``Engine`` or an instant stand-in."""

    model_id: str

    @property
    def max_images(self) -> int: ...

    def edit(
        self,
        request: EditRequest,
        *,
        on_step: StepCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> EditResult: ...
