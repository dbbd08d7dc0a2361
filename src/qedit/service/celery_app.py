"""Celery for scale-out: the message is only a task id; the store holds everything else.

Settings that make a broker safe for long GPU tasks: ``acks_late`` (a message is acknowledged
after the task ran, so a worker killed mid-task leaves it to be redelivered), prefetch 1 (a busy
worker does not hoard queued tasks), ``reject_on_worker_lost``. Redelivery can repeat a message;
the store's atomic claim makes a repeat a no-op. So it does for the message of a task a batching
worker (``QEDIT_BATCH_SIZE``) already claimed from the store to run with another's: the batch takes
compatible queued tasks without waiting for their messages, which then find them taken or finished.

A queue per model (``model_queue``): the API sends a task's id to its model's queue and ``qedit
worker --model X`` consumes only X's, so a message waits (in Redis, not in a worker's prefetch) for
a worker that can run it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from celery import Celery

from qedit.config import Settings

RUN_TASK = "qedit.run_task"

log = logging.getLogger("qedit.celery")

_worker: Any = None  # the process's Worker, set by ``bind_worker`` in ``qedit worker``


def model_queue(prefix: str, model: str) -> str:
    """``{prefix}.{slug}``: the model id lower-cased, each run of characters other than letters, digits,
    ``.``, ``_`` and ``-`` made one ``-``; when that changed the id (a hub id's ``/``, a path), 8 hex of
    its sha1 are added, so two ids never share a queue (``qedit.tiny``, ``qedit.qwen-qwen-image-edit-2509-1f0c...``)."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", model.lower()).strip("-.") or "model"
    if slug != model or len(slug) > 80:
        slug = f"{slug[:80]}-{hashlib.sha1(model.encode()).hexdigest()[:8]}"
    return f"{prefix}.{slug}"


def make_celery(settings: Settings) -> Celery:
    app = Celery("qedit", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.celery_queue,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        broker_transport_options={"visibility_timeout": max(3600, int(settings.lease_seconds * 4))},
    )
    app.task(name=RUN_TASK, bind=False, ignore_result=True)(run_task)
    return app


def bind_worker(worker: Any) -> None:
    global _worker
    _worker = worker


def run_task(task_id: str) -> str:
    """Run one task by id; a message for a task already taken or finished does nothing."""
    if _worker is None:
        raise RuntimeError("no qedit worker bound in this process (start it with `qedit worker`)")
    task = _worker.run_next(task_id)
    return task.status if task is not None else "skipped"
