"""``qedit keys create|list|revoke``: API keys in the task store (only their hashes are kept)."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="create, list and revoke API keys")
    p.add_argument("--data-dir", type=Path, help="as for qedit serve")
    p.add_argument("--database-url", help="as for qedit serve")
    ks = p.add_subparsers(dest="keys_command", required=True)
    c = ks.add_parser("create", help="create a key and print it (shown once)")
    c.add_argument("name", help="who or what the key is for")
    c.add_argument("--rpm", type=int, help="requests per minute (default: QEDIT_RATE_LIMIT_RPM)")
    c.add_argument("--concurrency", type=int, help="tasks queued+running at once (default: QEDIT_MAX_CONCURRENT_TASKS)")
    ks.add_parser("list", help="list keys (never the secrets)")
    r = ks.add_parser("revoke", help="revoke a key by id or prefix")
    r.add_argument("key", help="the key's id or its prefix (qk_xxxx)")
    p.set_defaults(func=run)


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def run(args: argparse.Namespace) -> int:
    from qedit.cli.service_settings import settings_from_args
    from qedit.errors import InvalidInput, quote
    from qedit.files import private_dir
    from qedit.service.database import Database
    from qedit.service.keys import KeyStore

    settings = settings_from_args(args)
    private_dir(settings.data_dir)
    db = Database(settings.db_url)
    db.create_schema()
    keys = KeyStore(db)
    try:
        if args.keys_command == "create":
            for flag in ("rpm", "concurrency"):
                if getattr(args, flag) is not None and getattr(args, flag) < 1:
                    raise InvalidInput(f"must be at least 1, got {getattr(args, flag)}", field=f"--{flag}")
            key, secret = keys.create(args.name, rate_limit_rpm=args.rpm, max_concurrent_tasks=args.concurrency)
            print(secret)
            print(f"id {key.id}  name {key.name}  (store the key now: it is not shown again)")
        elif args.keys_command == "list":
            print(f"{'id':16}  {'prefix':8}  {'name':20}  {'created':16}  {'revoked':16}  rpm  concurrency")
            for k in keys.list_all():
                print(
                    f"{k.id:16}  {k.prefix:8}  {k.name[:20]:20}  {_when(k.created_at):16}  {_when(k.revoked_at):16}  "
                    f"{k.rate_limit_rpm or '-'!s:>3}  {k.max_concurrent_tasks or '-'}"
                )
        else:
            key = keys.revoke(args.key)
            if key is None:
                raise InvalidInput(f"no single key with id or prefix {quote(args.key)}", field="key")
            print(f"revoked {key.id} ({key.name})")
    finally:
        db.close()
    return 0
