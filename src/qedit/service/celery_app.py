"""Celery for scale-out: the message is only a task id; the store holds everything else.

Settings that make a broker safe for long GPU tasks: ``acks_late`` (a message is acknowledged
after the task ran, so a worker killed mid-task leaves it to be redelivered), prefetch 1 (a busy
worker does not hoard queued tasks), ``reject_on_worker_lost``. Redelivery can repeat a message;
the store's atomic claim makes a repeat a no-op. So it does for the message of a task a batching
worker (``QEDIT_BATCH_SIZE``) already claimed from the store to run with another's: the batch takes
compatible queued tasks without waiting for their messages, which then find them taken or finished.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from qedit.config import Settings

RUN_TASK = "qedit.run_task"

log = logging.getLogger("qedit.celery")

_worker: Any = None  # the process's Worker, set by ``bind_worker`` in ``qedit worker``


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
