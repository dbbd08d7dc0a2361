"""The webhook outbox: pending is set with the final state, and one deliverer at a time."""

from __future__ import annotations

import time

from qedit.service.outbox import WebhookOutbox
from qedit.service.records import WebhookState
from qedit.service.tasks import TaskStore
from tests.support.tasks import add


def test_webhook_pending_is_set_with_the_final_state(tasks: TaskStore, outbox: WebhookOutbox) -> None:
    (with_hook,) = add(tasks, webhook_url="https://example.com/h")
    (without,) = add(tasks)
    for tid in (with_hook, without):
        t = tasks.claim("w", 60, task_id=tid)
        tasks.complete(tid, t.attempt, [], {}, 0.0)  # type: ignore[union-attr]
    assert outbox.pending() == [with_hook]
    assert outbox.move(with_hook, WebhookState.SENDING, expect=WebhookState.PENDING)
    assert not outbox.move(with_hook, WebhookState.SENDING, expect=WebhookState.PENDING)  # one deliverer
    assert outbox.reset_stuck(time.time() + 1) == 1 and outbox.pending() == [with_hook]
