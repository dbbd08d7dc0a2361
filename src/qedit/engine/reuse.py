"""Encodings reused across edits of one engine: identical prompt + images are encoded once.

A worker sees the same instruction on the same picture again and again: ``num_images`` variations
re-run with new seeds, retries after a failure, a client asking for "another one", a chain that
re-edits a result with the reference's default negative prompt. The VL encoder pass (and the VAE
encode of the references) depends only on the text, the pixels and the model, so its output is
kept in a small LRU keyed by a digest of exactly those inputs. Anything that changes the key
(one pixel, one character, another size) misses; LoRAs do not enter the key because the family's
LoRAs adapt the transformer only (diffusers' loader for Qwen-Image loads no text-encoder weights).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

import torch
from PIL import Image

T = TypeVar("T")


def images_digest(images: tuple[Image.Image, ...]) -> str:
    h = hashlib.sha256()
    for image in images:
        h.update(f"{image.mode}:{image.size}".encode())
        h.update(image.tobytes())
    return h.hexdigest()


def tensor_digest(x: torch.Tensor) -> str:
    h = hashlib.sha256(f"{x.dtype}:{tuple(x.shape)}".encode())
    h.update(x.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EncodingCache:
    """A bounded LRU; ``size`` 0 keeps nothing (every lookup computes)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, object] = OrderedDict()

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]  # type: ignore[return-value]
        self.misses += 1
        value = compute()
        if self.size > 0:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()
