"""The API's dialects, one torch-free module each: request schema, mapping onto ``EditParams`` and
``TaskOptions``, public view of a task, webhook body. The routers in ``qedit.api.routes`` and the
webhook sender use them; ``qedit.service`` deals in tasks only and knows none of them.
"""

from __future__ import annotations

from qedit.interfaces import aggregator, native, wavespeed
from qedit.service.records import Interface, TaskRecord
from qedit.service.storage import Storage
from qedit.service.webhooks import WebhookPayload


def webhook_payload(task: TaskRecord, storage: Storage) -> WebhookPayload:
    """What a finished task's webhook carries, and how it is signed, by the interface it came from.

    WaveSpeed POSTs its prediction and signs its own way; the aggregator its task view; the native
    API (and OpenAI's, which has no webhook of its own) the native view, Standard Webhooks signed.
    """
    if task.interface == Interface.WAVESPEED:
        return WebhookPayload(wavespeed.webhook_body(task, storage), "wavespeed")
    if task.interface == Interface.AGGREGATOR:
        return WebhookPayload(aggregator.webhook_body(task, storage), "standard")
    return WebhookPayload(native.webhook_body(task, storage), "standard")
