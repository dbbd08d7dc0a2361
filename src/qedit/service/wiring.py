"""Wiring: settings -> database, task store, outbox, keys, storage, webhooks, metrics, dispatcher.

Built on demand, never at import. ``build_services`` is what ``create_app`` uses (API + embedded
workers, or API + Celery dispatch); ``build_worker`` is what ``qedit worker`` uses (a Celery worker
process with its own engine). Both take the webhook body function from the caller, because the
bodies are the interfaces' business (``qedit.interfaces.webhook_payload``), not the service's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from qedit.config import Settings
from qedit.errors import InvalidInput
from qedit.files import private_dir
from qedit.models.protocol import EditEngine
from qedit.service.database import Database
from qedit.service.dispatch import CeleryDispatcher, Dispatcher, EmbeddedDispatcher
from qedit.service.fetching import FetchPool
from qedit.service.inputs import InputReader
from qedit.service.keys import KeyStore
from qedit.service.loras import LoraCheck
from qedit.service.metrics import Metrics
from qedit.service.outbox import WebhookOutbox
from qedit.service.signing import load_secret
from qedit.service.storage import Storage, open_storage
from qedit.service.tasks import TaskStore
from qedit.service.webhooks import WebhookBody, WebhookSender
from qedit.service.workers import WorkerRegistry

if TYPE_CHECKING:
    from qedit.service.worker import Worker


@dataclasses.dataclass
class Core:
    """What the API and every worker share: one database, the files, the secret, webhook delivery."""

    settings: Settings
    db: Database
    tasks: TaskStore
    outbox: WebhookOutbox
    keys: KeyStore
    storage: Storage
    secret: bytes
    webhooks: WebhookSender
    metrics: Metrics
    workers: WorkerRegistry


@dataclasses.dataclass
class Services(Core):
    """The API process's parts: the core plus input reading, the LoRA check and the dispatcher."""

    inputs: InputReader
    loras: LoraCheck
    dispatcher: Dispatcher
    fetches: FetchPool

    def start(self) -> None:
        self.dispatcher.start()

    def stop(self) -> None:
        self.dispatcher.stop()
        self.fetches.close()
        self.db.close()


def build_core(settings: Settings, webhook_body: WebhookBody) -> Core:
    private_dir(settings.data_dir)
    db = Database(settings.db_url)
    db.create_schema()
    tasks, outbox = TaskStore(db), WebhookOutbox(db)
    secret = load_secret(settings)
    storage = open_storage(settings, secret)
    webhooks = WebhookSender(settings, tasks, outbox, storage, secret, webhook_body)
    workers = WorkerRegistry(db, settings.worker_ttl)
    return Core(settings, db, tasks, outbox, KeyStore(db), storage, secret, webhooks, Metrics(tasks), workers)


def build_services(
    settings: Settings,
    webhook_body: WebhookBody,
    engine_factory: Callable[[Settings], EditEngine] | None = None,
) -> Services:
    if settings.backends_file is not None and settings.dispatch == "celery":
        raise InvalidInput(
            "a backends file needs dispatch=embedded (list Celery deployments as qedit backends)", field="backends_file"
        )
    core = build_core(settings, webhook_body)
    dispatcher: Dispatcher
    if settings.dispatch == "celery":
        dispatcher = CeleryDispatcher(core)
    else:
        from qedit.service import worker as worker_mod

        factory = engine_factory or worker_mod.load_engine

        def make_worker(on_webhook: Callable[[str], None]) -> Worker:
            name = worker_mod.worker_name("embedded")
            return worker_mod.Worker(core, engine_factory=factory, name=name, on_webhook=on_webhook)

        dispatcher = EmbeddedDispatcher(core, make_worker)
        if settings.backends_file is not None:
            from qedit.service.backends import build_router

            dispatcher = build_router(core, dispatcher)
    inputs = InputReader(settings, core.tasks, core.storage)
    shared = {f.name: getattr(core, f.name) for f in dataclasses.fields(Core)}
    fetches = FetchPool(settings.fetch_threads, settings.fetch_per_key)
    return Services(**shared, inputs=inputs, loras=LoraCheck(settings), dispatcher=dispatcher, fetches=fetches)


def build_worker(
    settings: Settings, webhook_body: WebhookBody, on_webhook: Callable[[str], None] | None = None
) -> Worker:
    """A standalone worker (for Celery): same database, storage and secret as the API it serves."""
    from qedit.service.worker import Worker, worker_name

    return Worker(build_core(settings, webhook_body), name=worker_name("celery"), on_webhook=on_webhook)
