"""Wiring: settings -> store, storage, webhooks, metrics, dispatcher. Built on demand, never at import.

``build_services`` is what ``create_app`` uses (API + embedded workers, or API + Celery dispatch);
``build_worker`` is what ``qedit worker`` uses (a Celery worker process with its own engine).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from qedit.config import Settings
from qedit.models.protocol import EditEngine
from qedit.service.dispatch import CeleryDispatcher, Dispatcher, EmbeddedDispatcher
from qedit.service.inputs import InputResolver
from qedit.service.metrics import Metrics
from qedit.service.signing import load_secret
from qedit.service.storage import LocalStorage
from qedit.service.store import TaskStore
from qedit.service.webhooks import WebhookSender


@dataclasses.dataclass
class Services:
    settings: Settings
    store: TaskStore
    storage: LocalStorage
    secret: bytes
    webhooks: WebhookSender
    metrics: Metrics
    inputs: InputResolver
    dispatcher: Dispatcher

    def start(self) -> None:
        self.dispatcher.start()

    def stop(self) -> None:
        self.dispatcher.stop()
        self.store.close()


def _core(settings: Settings) -> tuple[TaskStore, LocalStorage, bytes, WebhookSender, Metrics]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = TaskStore(settings.db_url)
    store.create_schema()
    secret = load_secret(settings)
    storage = LocalStorage(settings.data_dir, secret, settings.url_ttl_seconds)
    webhooks = WebhookSender(settings, store, storage, secret)
    return store, storage, secret, webhooks, Metrics(store)


def build_services(settings: Settings, engine_factory: Callable[[Settings], EditEngine] | None = None) -> Services:
    store, storage, secret, webhooks, metrics = _core(settings)
    dispatcher: Dispatcher
    if settings.dispatch == "celery":
        dispatcher = CeleryDispatcher(settings, store, storage, webhooks)
    else:
        from qedit.service import worker as worker_mod

        factory = engine_factory or worker_mod.load_engine

        def make_worker(on_webhook: Callable[[str], None]) -> worker_mod.Worker:
            return worker_mod.Worker(
                settings,
                store,
                storage,
                webhooks,
                metrics=metrics,
                engine_factory=factory,
                name=worker_mod.worker_name("embedded"),
                on_webhook=on_webhook,
            )

        dispatcher = EmbeddedDispatcher(settings, store, storage, webhooks, make_worker)
    inputs = InputResolver(settings, store, storage)
    return Services(settings, store, storage, secret, webhooks, metrics, inputs, dispatcher)


def build_worker(settings: Settings, on_webhook: Callable[[str], None] | None = None):  # -> worker.Worker
    """A standalone worker (for Celery): same store, storage and secret as the API it serves."""
    from qedit.service.worker import Worker, worker_name

    store, storage, _secret, webhooks, metrics = _core(settings)
    return Worker(
        settings, store, storage, webhooks, metrics=metrics, name=worker_name("celery"), on_webhook=on_webhook
    )
