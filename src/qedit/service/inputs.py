"""Image inputs at the boundary: any source -> validated bytes, before anything is queued.

A client names an image as an https URL, a data URI, bare base64, an upload, or ``task://ID/N`` (the
N-th output of an earlier task, so edits chain without re-uploading). Each is turned into bytes,
decoded once to check format and size, and then kept as received. Every violation is an
``InvalidInput`` naming the field, the limit and the value; nothing reaches the store.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from PIL import Image

from qedit.config import Settings
from qedit.errors import InvalidInput, QeditError
from qedit.netfetch import UrlPolicy, fetch_bytes
from qedit.request_check import SideLimits, check_image_sides
from qedit.service.records import TaskStatus
from qedit.service.storage import Storage
from qedit.service.tasks import ANY_KEY, TaskStore

_DATA_URI_RE = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[\w=.+-]+)*;base64,(.*)$", re.S)
_TASK_REF_RE = re.compile(r"^task://([0-9a-f]{32})(?:/(\d+))?$")


@dataclass(frozen=True)
class ImageInput:
    """One validated input: bytes to store, what they are, and where they came from."""

    data: bytes
    ext: str
    size: tuple[int, int]
    source: str  # "upload", "url", "data-uri", "base64" or the task:// reference
    parent_id: str | None = None
    mask: Image.Image | None = None  # a mask's decoded pixels (mode "L"), for the checks at submit


@dataclass(frozen=True)
class Limits:
    min_side: int
    max_side: int
    max_bytes: int

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(min_side=s.min_side, max_side=s.max_side, max_bytes=s.max_input_bytes)


class InputReader:
    """Reads client-given sources into validated ``ImageInput``s under one settings object."""

    def __init__(self, settings: Settings, tasks: TaskStore, storage: Storage) -> None:
        self.limits = Limits.from_settings(settings)
        self.policy = UrlPolicy(allow_private=settings.allow_private_urls, allow_http=settings.allow_http_urls)
        self.timeout = settings.fetch_timeout
        self.tasks = tasks
        self.storage = storage

    def from_string(self, source: str, field: str, key_id: object = ANY_KEY, *, mask: bool = False) -> ImageInput:
        """URL, data URI, base64 or task reference -> a validated input."""
        source = source.strip()
        if not source:
            raise InvalidInput("is empty; expected an https URL, a data URI, base64 or task://ID/N", field=field)
        ref = _TASK_REF_RE.match(source)
        if ref:
            data, parent = self._task_output(ref.group(1), int(ref.group(2) or 0), field, key_id), ref.group(1)
            return self.validate(data, field, source=source, parent_id=parent, mask=mask)
        if source.startswith("task://"):
            raise InvalidInput(f"expected task://<32 hex id>/<output index>, got {source[:80]!r}", field=field)
        own = self.storage.own_file(source) if source.startswith(("http://", "https://")) else None
        if own is not None:  # a result (or upload) URL of this server: no request to ourselves
            owner, data = own
            parent = owner if self.tasks.get(owner, key_id) is not None else None
            return self.validate(data, field, source="url", parent_id=parent, mask=mask)
        if source.startswith(("http://", "https://")) or "://" in source[:12]:
            data = fetch_bytes(
                source, policy=self.policy, max_bytes=self.limits.max_bytes, timeout=self.timeout, field=field
            )
            return self.validate(data, field, source="url", mask=mask)
        m = _DATA_URI_RE.match(source)
        if m:
            return self.validate(self._b64(m.group(3), field), field, source="data-uri", mask=mask)
        if source.startswith("data:"):
            raise InvalidInput("data URI must be data:<type>;base64,<data>", field=field)
        return self.validate(self._b64(source, field), field, source="base64", mask=mask)

    def from_upload(self, data: bytes, field: str, *, mask: bool = False) -> ImageInput:
        return self.validate(data, field, source="upload", mask=mask)

    def _b64(self, text: str, field: str) -> bytes:
        # 4 base64 chars carry 3 bytes: refuse oversize before decoding it
        if len(text) * 3 // 4 > self.limits.max_bytes + 3:
            raise InvalidInput(
                f"image is about {len(text) * 3 // 4} bytes, at most {self.limits.max_bytes} allowed", field=field
            )
        try:
            return base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            shown = text[:40] + ("..." if len(text) > 40 else "")
            raise InvalidInput(
                f"is neither an https URL, a data URI, task://ID/N nor valid base64 ({shown!r})", field=field
            ) from None

    def _task_output(self, task_id: str, index: int, field: str, key_id: object) -> bytes:
        task = self.tasks.get(task_id, key_id)
        if task is None:
            raise InvalidInput(f"task {task_id} not found", field=field, status=404)
        if task.status != TaskStatus.COMPLETED:
            raise InvalidInput(
                f"task {task_id} is {task.status}, only a completed task's outputs can be used", field=field, status=409
            )
        if not 0 <= index < len(task.outputs):
            raise InvalidInput(
                f"task {task_id} has {len(task.outputs)} output(s) (0-{len(task.outputs) - 1}), got index {index}",
                field=field,
            )
        if task.files_expired:
            raise InvalidInput(f"task {task_id}'s outputs have expired", field=field, status=410)
        try:
            return self.storage.read(task.outputs[index].file)
        except (OSError, ValueError):
            raise InvalidInput(
                f"task {task_id}'s output {index} is no longer stored", field=field, status=410
            ) from None

    def validate(
        self, data: bytes, field: str, *, source: str, parent_id: str | None = None, mask: bool = False
    ) -> ImageInput:
        """Size in bytes, a supported format, each side within the limits (read from the header,
        before anything is decoded: a small file may declare a huge image), then decodable."""
        lim = self.limits
        if len(data) > lim.max_bytes:
            raise InvalidInput(f"image is {len(data)} bytes, at most {lim.max_bytes} allowed", field=field)
        if not data:
            raise InvalidInput("image is empty (0 bytes)", field=field)
        from qedit import imageio

        name, declared = imageio.probe(data, field)
        check_image_sides(declared, SideLimits(lim.min_side, lim.max_side), field)
        fmt = imageio.EXTENSIONS[name]
        try:
            image = imageio.load_mask(data, field=field) if mask else imageio.load_image(data, field=field)
        except QeditError:
            raise
        except Exception as e:  # a decoder error is the client's file, not our bug
            raise InvalidInput(f"cannot decode the image: {e}", field=field) from None
        w, h = image.size  # after EXIF rotation: the sides may have swapped, not changed
        return ImageInput(
            data=data, ext=fmt, size=(w, h), source=source, parent_id=parent_id, mask=image if mask else None
        )
