"""API keys and what each has used: secrets kept only as hashes, usage counted from its tasks."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
import uuid

from sqlalchemy import func, or_, select

from qedit.service.database import Database
from qedit.service.records import TaskStatus
from qedit.service.tables import ApiKeyRow, TaskRow


@dataclasses.dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None
    rate_limit_rpm: int | None
    max_concurrent_tasks: int | None


@dataclasses.dataclass(frozen=True)
class Usage:
    tasks: int
    completed: int
    failed: int
    images: int
    compute_seconds: float


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self, name: str, *, rate_limit_rpm: int | None = None, max_concurrent_tasks: int | None = None
    ) -> tuple[ApiKey, str]:
        """A new key; the secret is returned once and only its hash is kept."""
        secret = "qk_" + secrets.token_urlsafe(24)
        row = ApiKeyRow(
            id=uuid.uuid4().hex[:16],
            name=name,
            prefix=secret[:7],
            hash=hash_key(secret),
            created_at=time.time(),
            rate_limit_rpm=rate_limit_rpm,
            max_concurrent_tasks=max_concurrent_tasks,
        )
        with self.db.transaction() as s:
            s.add(row)
        return _key(row), secret

    def list_all(self, include_revoked: bool = True) -> list[ApiKey]:
        q = select(ApiKeyRow).order_by(ApiKeyRow.created_at)
        if not include_revoked:
            q = q.where(ApiKeyRow.revoked_at.is_(None))
        with self.db.transaction() as s:
            return [_key(r) for r in s.scalars(q)]

    def by_secret(self, secret: str) -> ApiKey | None:
        """The live key with this secret, or None (unknown and revoked look the same)."""
        q = select(ApiKeyRow).where(ApiKeyRow.hash == hash_key(secret), ApiKeyRow.revoked_at.is_(None))
        with self.db.transaction() as s:
            row = s.scalars(q).first()
            return _key(row) if row else None

    def revoke(self, key_id_or_prefix: str) -> ApiKey | None:
        with self.db.transaction() as s:
            rows = list(
                s.scalars(
                    select(ApiKeyRow).where(or_(ApiKeyRow.id == key_id_or_prefix, ApiKeyRow.prefix == key_id_or_prefix))
                )
            )
            if len(rows) != 1:
                return None
            row = rows[0]
            if row.revoked_at is None:
                row.revoked_at = time.time()
            return _key(row)

    def usage(self, key_id: str | None, since: float | None = None) -> Usage:
        base = select(
            func.count(),
            func.coalesce(func.sum(TaskRow.n_outputs), 0),
            func.coalesce(func.sum(TaskRow.compute_seconds), 0.0),
        ).where(TaskRow.key_id == key_id)
        if since is not None:
            base = base.where(TaskRow.created_at >= since)
        with self.db.transaction() as s:
            total, _, compute = s.execute(base).one()
            completed, images, _ = s.execute(base.where(TaskRow.status == TaskStatus.COMPLETED.value)).one()
            failed, _, _ = s.execute(base.where(TaskRow.status == TaskStatus.FAILED.value)).one()
        return Usage(
            tasks=int(total),
            completed=int(completed),
            failed=int(failed),
            images=int(images),
            compute_seconds=float(compute),
        )

    def images_by_backend(
        self, key_id: str | None, since: float | None = None
    ) -> list[tuple[str | None, float | None, int]]:
        """Completed images per (serving backend, its price then); (None, None) for tasks run without backends."""
        q = (
            select(TaskRow.backend, TaskRow.price_per_image, func.coalesce(func.sum(TaskRow.n_outputs), 0))
            .where(TaskRow.key_id == key_id, TaskRow.status == TaskStatus.COMPLETED.value)
            .group_by(TaskRow.backend, TaskRow.price_per_image)
        )
        if since is not None:
            q = q.where(TaskRow.created_at >= since)
        with self.db.transaction() as s:
            return [(b, p, int(n)) for b, p, n in s.execute(q)]


def _key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        rate_limit_rpm=row.rate_limit_rpm,
        max_concurrent_tasks=row.max_concurrent_tasks,
    )
