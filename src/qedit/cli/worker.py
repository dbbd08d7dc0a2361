"""``qedit worker``: a Celery worker running edits for ``qedit serve --dispatch celery``.

One engine run at a time per process (``--pool solo``: the engine stays loaded, no fork after torch),
late acknowledgement and prefetch 1, so a killed worker's task is redelivered and re-run elsewhere.
With ``--batch-size N`` a run takes its message's task plus up to N-1 compatible queued ones from the
store; their own messages then find them taken and do nothing. Needs the same storage (an S3 bucket,
``--storage-url``, or a shared data dir), database URL, secret and broker as the API.

Each worker serves one model (``--model``, with its engine options) and consumes that model's queue
(``{--queue}.{model slug}``, ``celery_app.model_queue``); it claims only tasks of that model. It says
it is alive in the worker registry (``GET /v1/workers``) from start to a clean stop. One per GPU:
``--device cuda:N``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qedit.cli.engine_flags import add_engine_arguments
from qedit.cli.serve import add_batch_arguments, add_storage_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a Celery worker for scale-out (qedit serve --dispatch celery)")
    p.add_argument("--model", help="the one model this worker serves (spec name, snapshot dir, hub id, instant)")
    p.add_argument("--device", help="cuda, cuda:N (one worker per GPU), mps or cpu")
    p.add_argument("--data-dir", type=Path, help="shared with the API")
    p.add_argument("--database-url", help="shared with the API (Postgres for several hosts)")
    p.add_argument("--broker-url", help="Celery broker (default redis://127.0.0.1:6379/0)")
    p.add_argument(
        "--queue",
        dest="celery_queue",
        help="prefix of the Celery queues, as the API's (default qedit): consumes {prefix}.{model}",
    )
    p.add_argument("--metrics-port", type=int, help="serve this worker's Prometheus metrics on this port")
    add_storage_arguments(p)
    add_engine_arguments(p)
    add_batch_arguments(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging
    import os
    from concurrent.futures import ThreadPoolExecutor

    from qedit.cli.service_settings import settings_from_args
    from qedit.interfaces import webhook_payload
    from qedit.service.celery_app import bind_worker, make_celery, model_queue
    from qedit.service.wiring import build_worker

    settings = settings_from_args(args, dispatch="celery")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="qedit-webhook")
    holder: dict = {}
    worker = build_worker(
        settings, webhook_payload, on_webhook=lambda tid: pool.submit(holder["w"].webhooks.deliver, tid)
    )
    holder["w"] = worker
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, registry=worker.metrics.registry)
    queue = model_queue(settings.celery_queue, worker.model)
    logging.getLogger("qedit.worker").info("worker %s serves %s from queue %s", worker.name, worker.model, queue)
    worker.start()  # in the registry as loading, so the API knows a worker of this model is coming
    try:
        _ = worker.engine  # load the model before taking messages
        bind_worker(worker)
        app = make_celery(settings)
        app.worker_main(
            [
                "worker",
                "--pool=solo",
                "--concurrency=1",
                f"--queues={queue}",
                "--prefetch-multiplier=1",
                f"--loglevel={args.log_level.upper()}",
                "--without-gossip",
                "--without-mingle",
                f"--hostname=qedit-{os.getpid()}@%h",
            ]
        )
    finally:
        worker.stop()
        pool.shutdown(wait=True)
    return 0
