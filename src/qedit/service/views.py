"""How a task looks from outside, one function per interface.

The HTTP responses and the webhook bodies of an interface are the same object (WaveSpeed POSTs the
``data`` of its result; our native API its task), so both are built here, from the task record
alone, and the worker can send webhooks without the API layer.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from qedit.imageio import MIME_TYPES
from qedit.service.storage import LocalStorage
from qedit.service.store import TaskRecord, WebhookAttempt


def iso(ts: float | None) -> str | None:
    """``2023-04-01T12:34:56.789Z``, the form WaveSpeed documents."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def output_urls(task: TaskRecord, storage: LocalStorage) -> list[str]:
    if task.status != "completed" or task.files_expired:
        return []
    return [storage.url(task.base_url, task.id, o["name"], task.finished_at) for o in task.outputs]


def output_data_uris(task: TaskRecord, storage: LocalStorage) -> list[str]:
    if task.status != "completed" or task.files_expired:
        return []
    out = []
    for o in task.outputs:
        data = storage.resolve(o["file"]).read_bytes()
        out.append(
            f"data:{MIME_TYPES.get(o['format'], 'application/octet-stream')};base64,{base64.b64encode(data).decode()}"
        )
    return out


def output_b64(task: TaskRecord, storage: LocalStorage) -> list[str]:
    return [uri.split(",", 1)[1] for uri in output_data_uris(task, storage)]


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


# -- native -------------------------------------------------------------------------------------


def native(task: TaskRecord, storage: LocalStorage, attempts: list[WebhookAttempt] | None = None) -> dict[str, Any]:
    urls = output_urls(task, storage)
    b64 = output_b64(task, storage) if task.options.get("base64") else [None] * len(urls)
    outputs = [
        {
            "index": i,
            "url": url,
            "b64_json": data,
            "seed": o["seed"],
            "width": o["width"],
            "height": o["height"],
            "format": o["format"],
            "metadata": o.get("metadata", {}),
        }
        for i, (o, url, data) in enumerate(zip(task.outputs, urls, b64, strict=False))
    ]
    view: dict[str, Any] = {
        "id": task.id,
        "object": "edit",
        "interface": task.interface,
        "model": task.model,
        "status": task.status,
        "created_at": iso(task.created_at),
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
        "queue_wait_ms": _ms(task.queue_wait),
        "inference_ms": _ms(task.inference_seconds),
        "timings": task.timings,
        "attempt": task.attempt,
        "progress": {"step": task.progress_step, "total": task.progress_total},
        "params": task.params,
        "parent_id": task.parent_id,
        "inputs": [{"source": i["source"], "width": i["width"], "height": i["height"]} for i in task.inputs],
        "outputs": outputs,
        "expires_at": iso(storage.expires_at(task.finished_at)) if task.finished_at else None,
        "error": {"message": task.error, "reason": task.error_reason} if task.error else None,
        "webhook": None,
    }
    if task.webhook_url:
        view["webhook"] = {
            "url": task.webhook_url,
            "state": task.webhook_state,
            "attempts": [
                {
                    "webhook_id": a.webhook_id,
                    "event": a.event,
                    "attempt": a.attempt,
                    "at": iso(a.at),
                    "status_code": a.status_code,
                    "error": a.error,
                    "duration_ms": round(a.duration_ms, 1),
                }
                for a in (attempts or [])
            ],
        }
    return view


# -- WaveSpeed v3 -------------------------------------------------------------------------------

WAVESPEED_STATUS = {
    "created": "created",
    "processing": "processing",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "failed",
}


def wavespeed_data(task: TaskRecord, storage: LocalStorage) -> dict[str, Any]:
    """The ``data`` object of ``GET /api/v3/predictions/{id}/result`` (and of its webhook)."""
    outputs = output_data_uris(task, storage) if task.options.get("base64") else output_urls(task, storage)
    inference = task.inference_seconds
    return {
        "id": task.id,
        "model": task.options.get("wavespeed_model", task.model),
        "outputs": outputs,
        "urls": {"get": f"{task.base_url.rstrip('/')}/api/v3/predictions/{task.id}/result"},
        "has_nsfw_contents": [False] * len(outputs),
        "status": WAVESPEED_STATUS[task.status],
        "created_at": iso(task.created_at),
        "error": task.error or "",
        "timings": {"inference": _ms(inference) or 0},
    }


def wavespeed_envelope(data: Any, code: int = 200, message: str = "success") -> dict[str, Any]:
    return {"code": code, "message": message, "data": data}


# -- the aggregator's task API ------------------------------------------------------------------

AGGREGATOR_STATUS = {
    "created": "queued",
    "processing": "processing",
    "completed": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}


def aggregator(task: TaskRecord, storage: LocalStorage) -> dict[str, Any]:
    urls = output_urls(task, storage)
    progress = (
        100
        if task.status == "completed"
        else (round(100 * task.progress_step / task.progress_total) if task.progress_total else 0)
    )
    return {
        "task_id": task.id,
        "object": "image.task",
        "model": task.options.get("aggregator_model", task.model),
        "status": AGGREGATOR_STATUS[task.status],
        "progress": progress,
        "created_at": int(task.created_at),
        "completed_at": int(task.finished_at) if task.finished_at else None,
        "data": [{"url": u} for u in urls],
        "expires_at": storage.expires_at(task.finished_at) if task.finished_at else None,
        "error": {"message": task.error, "code": task.error_reason} if task.error else None,
        "usage": {"images": task.n_outputs, "compute_seconds": round(task.compute_seconds, 3)},
    }


def webhook_body(task: TaskRecord, storage: LocalStorage) -> dict[str, Any]:
    """What each interface's webhook carries."""
    if task.interface == "wavespeed":
        return wavespeed_data(task, storage)
    if task.interface == "aggregator":
        return aggregator(task, storage)
    return native(task, storage)
