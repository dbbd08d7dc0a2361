"""Outbound work of submissions (image and LoRA fetches, webhook host checks) on its own threads.

Why not starlette's ``run_in_threadpool``: that is anyio's one shared pool (40 threads) which every
sync dependency (authentication) and sync route also waits on. A client whose image URLs trickle
for the whole fetch deadline could fill it, and another key's ``GET /v1/edits`` then waited behind
them. Here fetches have a pool of their own, and one key may hold only ``fetch_per_key`` of its
threads at a time; more is a 429 at once, not a wait.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from qedit.errors import QeditError

T = TypeVar("T")


class TooManyFetches(QeditError):
    """A key is already fetching inputs for ``per_key`` submissions (HTTP 429 with Retry-After)."""

    code = "too_many_fetches"
    headers = {"Retry-After": "2"}  # noqa: RUF012 - read by the API's error handler


class FetchPool:
    def __init__(self, workers: int, per_key: int) -> None:
        self.per_key = per_key
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qedit-fetch")
        self._busy: Counter[str] = Counter()
        self._lock = threading.Lock()

    async def run(self, key_id: str | None, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on a fetch thread; a key already using ``per_key`` of them gets a 429."""
        slot = key_id or ""  # anonymous callers (local mode) share one slot count
        with self._lock:
            if key_id is not None and self._busy[slot] >= self.per_key:
                raise TooManyFetches(
                    f"{self._busy[slot]} submissions of this key are fetching inputs, at most {self.per_key} at once;"
                    " retry when one finishes",
                    field="authorization",
                    status=429,
                )
            self._busy[slot] += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, lambda: fn(*args))
        finally:
            with self._lock:
                self._busy[slot] -= 1
                if self._busy[slot] <= 0:
                    del self._busy[slot]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
