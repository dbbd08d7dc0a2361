"""What every interface shares: the checked size text, the mapping onto ``EditParams``, and the
pieces of a public view (times, output URLs, inline data).

Each dialect module (native, wavespeed, openai, aggregator) holds its request schema, its mapping
onto ``EditParams`` and ``TaskOptions``, its public view of a task and its webhook body; the API's
routers and the webhook sender use them, and the service never needs to know a dialect.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from qedit.errors import InvalidInput
from qedit.imageio import MIME_TYPES
from qedit.params import EditParams, parse_size, validate
from qedit.service.records import TaskRecord, TaskStatus
from qedit.service.storage import Storage


def _checked_size(v: str | None) -> str | None:
    if v is not None and v != "auto":
        try:
            parse_size(v)
        except InvalidInput as e:
            raise ValueError(e.message) from None
    return v


SizeText = Annotated[
    str, Field(pattern=r"^(auto|\s*\d+\s*[xX*×]\s*\d+\s*)$", max_length=32), AfterValidator(_checked_size)
]
"""An output size as the interface spells it ("W*H", "WxH", or "auto" where allowed), checked by
the same rules as ``EditParams.size`` and kept as text so that responses can echo it."""


def edit_params(prompt: str, *, size: str | None = None, **optional: Any) -> EditParams:
    """A dialect's fields -> ``EditParams``: the size text parsed ("auto"/absent: the input's size),
    and each optional field passed on only when the client set it, so ``EditParams`` and the model
    spec keep the only copy of the defaults."""
    data: dict[str, Any] = {"prompt": prompt, **{k: v for k, v in optional.items() if v is not None}}
    if size is not None and size != "auto":
        data["size"] = parse_size(size)
    return validate(EditParams, data)


# -- views ---------------------------------------------------------------------------------------


def iso(ts: float | None) -> str | None:
    """``2023-04-01T12:34:56.789Z``, the form WaveSpeed documents."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def has_files(task: TaskRecord) -> bool:
    return task.status == TaskStatus.COMPLETED and not task.files_expired


def output_urls(task: TaskRecord, storage: Storage) -> list[str]:
    """Signed URLs of the outputs, valid until the files are deleted."""
    if not has_files(task):
        return []
    return [storage.url(task.base_url, task.id, o.name, task.finished_at) for o in task.outputs]


def output_b64(task: TaskRecord, storage: Storage) -> list[str]:
    if not has_files(task):
        return []
    return [base64.b64encode(storage.read(o.file)).decode() for o in task.outputs]


def output_data_uris(task: TaskRecord, storage: Storage) -> list[str]:
    mimes = [MIME_TYPES.get(o.format, "application/octet-stream") for o in task.outputs]
    return [f"data:{mime};base64,{data}" for mime, data in zip(mimes, output_b64(task, storage), strict=False)]
