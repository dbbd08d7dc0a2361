"""``qedit serve``: the HTTP API with in-process workers (or Celery dispatch), on one machine.

Flags override ``QEDIT_*`` variables; everything else comes from the environment (see
``qedit.config.Settings`` and docs/service.md). Keys are required unless started with ``--no-auth``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qedit.cli.engine_flags import add_engine_arguments


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """Request batching in the worker (docs/service.md#batching); shared with ``qedit worker``."""
    g = parser.add_argument_group("request batching")
    g.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="denoise up to N queued tasks that share size, steps, CFG and LoRAs together (default 1 = off)",
    )
    g.add_argument(
        "--batch-wait",
        type=float,
        metavar="S",
        help="seconds a worker waits for compatible tasks to fill a batch (default 0.05)",
    )


def add_storage_arguments(parser: argparse.ArgumentParser) -> None:
    """Where inputs and outputs live (docs/service.md#s3-storage); shared with ``qedit worker``."""
    g = parser.add_argument_group("storage")
    g.add_argument("--storage-url", metavar="s3://BUCKET/PREFIX", help="S3-compatible storage (default: the data dir)")
    g.add_argument("--s3-endpoint-url", metavar="URL", help="the S3 API (MinIO, R2, ...; default: AWS)")
    g.add_argument("--s3-region", metavar="REGION", help="the bucket's region (default: boto3's, else us-east-1)")
    g.add_argument(
        "--s3-public-endpoint-url", metavar="URL", help="the S3 host named in result URLs, if clients reach it so"
    )
    g.add_argument(
        "--s3-create-bucket", action="store_true", default=None, help="development: create the bucket if missing"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the HTTP API (WaveSpeed, OpenAI, aggregator and native interfaces)",
        description="Serve edits over HTTP: task store, workers, webhooks. Settings come from "
        "QEDIT_* variables; these flags override them.",
    )
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--model", help="spec name, snapshot dir or hub id; 'instant' = dry-run stand-in (default tiny)")
    p.add_argument("--device", help="cuda, mps or cpu (default: best available)")
    p.add_argument("--data-dir", type=Path, help="inputs, outputs, SQLite db and secret")
    p.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in the data dir)")
    p.add_argument("--workers", type=int, help="in-process worker threads, each with its own engine (default 1)")
    p.add_argument("--dispatch", choices=["embedded", "celery"], help="embedded workers or Celery (qedit worker)")
    p.add_argument("--public-url", help="base URL clients reach this server at (for result links)")
    p.add_argument("--no-auth", action="store_true", help="local mode: no API keys, every caller anonymous")
    p.add_argument(
        "--lora-dir",
        dest="lora_dirs",
        action="append",
        type=Path,
        help="a folder LoRAs may come from (repeatable; default DATA_DIR/loras)",
    )
    p.add_argument(
        "--lora-hub-org",
        dest="lora_hub_orgs",
        action="append",
        help="a hub organisation LoRAs may come from (repeatable; * = any)",
    )
    p.add_argument(
        "--lora-url-host",
        dest="lora_url_hosts",
        action="append",
        help="a host LoRA URLs may point to (repeatable; * = any; .example.com = its subdomains)",
    )
    p.add_argument(
        "--lightning-dir",
        dest="lightning_dirs",
        action="append",
        type=Path,
        help="a folder of Lightning LoRA files for --fast (repeatable; default DATA_DIR/lightning)",
    )
    add_storage_arguments(p)
    p.add_argument(
        "--also-model",
        dest="models",
        action="append",
        help="another model requests may name before a worker of it is live (repeatable; see docs/service.md)",
    )
    p.add_argument(
        "--no-worker",
        dest="no_worker",
        choices=["wait", "refuse"],
        help="a request for a model no live worker serves: wait (queued, default) or refuse (503)",
    )
    p.add_argument(
        "--backends",
        dest="backends_file",
        type=Path,
        metavar="FILE",
        help="TOML file of backends (local, other qedit servers, WaveSpeed APIs) to route tasks to "
        "by price and health (docs/service.md#backends)",
    )
    add_engine_arguments(p)
    add_batch_arguments(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from qedit.api.app import create_app
    from qedit.cli.service_settings import settings_from_args

    settings = settings_from_args(args, **({"auth": "none"} if args.no_auth else {}))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    if settings.auth == "none":
        logging.getLogger("qedit").warning("local mode: no API keys required (--no-auth)")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0
