"""Task files in an S3-compatible bucket (AWS S3, MinIO, R2, Ceph...), for API and workers on many hosts.

Selected by ``QEDIT_STORAGE_URL=s3://bucket/prefix``; every key of ``storage.Storage`` is stored
under ``prefix``. Credentials come from boto3's own chain (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, an instance role...), never from qedit's settings.

A result URL is a presigned GET (SigV4) that expires at the same moment a local one does,
``finished_at + url_ttl_seconds``, when the sweeper deletes the object. A presigned URL cannot
outlive 7 days (SigV4's limit): with a longer ``url_ttl_seconds`` each URL lasts 7 days, and asking
for the task again gives a fresh one, until the objects are deleted. Presigning is local (no
request); with ``QEDIT_S3_PUBLIC_ENDPOINT_URL`` URLs name the host clients reach, while the service
itself talks to ``QEDIT_S3_ENDPOINT_URL``.

A presigned URL of ours given back as an input is recognised (the bucket, key and SigV4 signature
recomputed with our credentials, and its expiry) and read from the bucket, not fetched.
"""

from __future__ import annotations

import calendar
import contextlib
import hmac
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from qedit.config import Settings, parse_storage_url
from qedit.imageio import MIME_TYPES
from qedit.service.storage import SERVED_KINDS, SignedUploads, StorageUnavailable, task_key

MAX_PRESIGN_SECONDS = 7 * 24 * 3600
"""SigV4's longest presigned URL (S3 refuses ``X-Amz-Expires`` above it)."""

_SIGNED_TAIL_RE = re.compile(r"(outputs|uploads)/[0-9a-f]{2}/([0-9a-f]{32})/([A-Za-z0-9_.-]{1,64})$")
_MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


class StorageError(StorageUnavailable):
    """The bucket cannot be used (missing, unreachable, no credentials): one line naming the setting."""


class S3Storage(SignedUploads):
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        secret: bytes,
        ttl_seconds: int,
        *,
        presigner: Any | None = None,
        credentials: Any | None = None,
        region: str = "us-east-1",
    ) -> None:
        super().__init__(secret, ttl_seconds)
        self.client = client  # the service's own requests (QEDIT_S3_ENDPOINT_URL)
        self.presigner = presigner or client  # URLs for clients (QEDIT_S3_PUBLIC_ENDPOINT_URL)
        self.bucket, self.prefix = bucket, prefix
        self._credentials = credentials
        self.region = region

    @classmethod
    def from_settings(cls, settings: Settings, secret: bytes) -> S3Storage:
        """Clients for the bucket of ``storage_url``, and the bucket checked (or created) now."""
        bucket, prefix = parse_storage_url(settings.storage_url or "")
        session = boto3.session.Session(region_name=settings.s3_region)
        region = session.region_name or "us-east-1"
        # path-style for explicit endpoints (MinIO, moto, Ceph): a bucket as a subdomain needs DNS for it
        style = "path" if settings.s3_endpoint_url else "auto"
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": style},
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=max(10, settings.fetch_threads),
        )
        client = session.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=region, config=config)
        presigner = client
        if settings.s3_public_endpoint_url:
            presigner = session.client(
                "s3", endpoint_url=settings.s3_public_endpoint_url, region_name=region, config=config
            )
        storage = cls(
            client,
            bucket,
            prefix,
            secret,
            settings.url_ttl_seconds,
            presigner=presigner,
            credentials=session.get_credentials(),
            region=region,
        )
        storage.check_bucket(create=settings.s3_create_bucket, endpoint=settings.s3_endpoint_url or "AWS S3")
        return storage

    def check_bucket(self, *, create: bool = False, endpoint: str = "") -> None:
        """At start, so a wrong bucket or endpoint stops the command with one line, not the first task."""
        where = f"bucket {self.bucket!r} at {endpoint or 'the endpoint'}"
        try:
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                if _code(e) not in _MISSING or not create:
                    raise
                extra = {} if self.region == "us-east-1" else {"LocationConstraint": self.region}
                self.client.create_bucket(Bucket=self.bucket, **({"CreateBucketConfiguration": extra} if extra else {}))
        except NoCredentialsError:
            raise StorageError(
                f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from None
        except ClientError as e:
            code = _code(e)
            if code in _MISSING:
                raise StorageError(
                    f"{where} does not exist (create it, or set QEDIT_S3_CREATE_BUCKET=1 in development)"
                ) from None
            if code in ("403", "AccessDenied", "Forbidden"):
                raise StorageError(f"access to {where} denied for these credentials") from None
            raise StorageError(f"{where}: {code}: {e}") from None
        except BotoCoreError as e:  # unreachable endpoint, bad URL, timeouts
            raise StorageError(f"cannot reach {where}: {e}") from None

    # -- bytes --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _available(self, what: str) -> Iterator[None]:
        """An outage of the bucket (unreachable, 5xx after boto3's retries, denied) is a 503 naming the
        storage, never a 500; a worker's run that meets one is left to its lease and run again."""
        try:
            yield
        except ClientError as e:
            if _code(e) in _MISSING:
                raise
            raise StorageError(f"bucket {self.bucket!r} refused to {what}: {_code(e)}") from None
        except BotoCoreError as e:
            raise StorageError(f"cannot reach bucket {self.bucket!r} to {what}: {e}") from None

    def _object(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"key {key!r} leaves the storage")
        return self.prefix + key

    def _put(self, key: str, data: bytes) -> str:
        mime = MIME_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream")
        with self._available(f"store {key}"):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._object(key),
                Body=data,
                ContentType=mime,
                CacheControl="private, max-age=3600",
            )
        return key

    def write_input(self, task_id: str, name: str, data: bytes) -> str:
        return self._put(task_key("inputs", task_id, name), data)

    def write_output(self, task_id: str, name: str, data: bytes) -> str:
        return self._put(task_key("outputs", task_id, name), data)

    def write_upload(self, upload_id: str, name: str, data: bytes) -> str:
        return self._put(task_key("uploads", upload_id, name), data)

    def read(self, key: str) -> bytes:
        try:
            with self._available(f"read {key}"):
                return self.client.get_object(Bucket=self.bucket, Key=self._object(key))["Body"].read()
        except ClientError as e:
            if _code(e) in _MISSING:
                raise FileNotFoundError(f"{key} is not stored") from None
            raise

    def delete(self, key: str) -> None:
        with self._available(f"delete {key}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._object(key))

    def read_served(self, task_id: str, name: str) -> bytes | None:
        for kind in SERVED_KINDS:
            try:
                return self.read(task_key(kind, task_id, name))
            except (FileNotFoundError, ValueError):
                continue
        return None

    def _list(self, prefix: str) -> Iterator[dict]:
        with self._available(f"list {prefix}"):
            pages = list(self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix))
        for page in pages:
            yield from page.get("Contents", [])

    def _delete_objects(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            chunk = [{"Key": k} for k in keys[i : i + 1000]]
            with self._available("delete objects"):
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})

    def delete_task_files(self, task_id: str) -> None:
        keys = [
            o["Key"] for kind in ("inputs", "outputs") for o in self._list(self._object(task_key(kind, task_id)) + "/")
        ]
        self._delete_objects(keys)

    def delete_old_uploads(self, before: float) -> int:
        old = [o for o in self._list(self.prefix + "uploads/") if o["LastModified"].timestamp() < before]
        self._delete_objects([o["Key"] for o in old])
        return len({o["Key"].rsplit("/", 1)[0] for o in old})

    # -- URLs -------------------------------------------------------------------------------------

    def presign(self, key: str, expires: int) -> str:
        """A GET URL for ``key`` that stops working at ``expires`` (at most 7 days from now)."""
        seconds = min(max(expires - int(time.time()), 1), MAX_PRESIGN_SECONDS)
        return self.presigner.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._object(key)}, ExpiresIn=seconds
        )

    def url(self, base_url: str, task_id: str, name: str, finished_at: float | None) -> str:
        return self.presign(task_key("outputs", task_id, name), self.expires_at(finished_at))

    def upload_urls(self, base_url: str, upload_id: str, name: str) -> tuple[str, str, int]:
        """The PUT comes to us (the bytes are checked as an image); the download URL is presigned."""
        expires = int(time.time() + self.ttl)
        put = self.put_url(base_url, upload_id, name, expires)
        return put, self.presign(task_key("uploads", upload_id, name), expires), expires

    def own_file(self, url: str) -> tuple[str, bytes] | None:
        """Our ``/v1/files`` URLs and our presigned URLs, read from the bucket (no request to a URL)."""
        own = self.signed_own_url(url) or self.presigned_own(url)
        if own is None:
            return None
        data = self.read_served(*own)
        return (own[0], data) if data is not None else None

    def presigned_own(self, url: str, now: float | None = None) -> tuple[str, str] | None:
        """(id, name) if ``url`` is a presigned GET of ours for an output or upload, signed with our
        credentials and not expired; None for anything else (it is then fetched like any URL)."""
        parts = urlsplit(url)
        m = _SIGNED_TAIL_RE.search(unquote(parts.path))
        if m is None or self._credentials is None:
            return None
        kind, task_id, name = m.groups()
        ours = urlsplit(self.presign(task_key(kind, task_id, name), int(time.time()) + 60))
        if (parts.scheme, parts.netloc, parts.path) != (ours.scheme, ours.netloc, ours.path):
            return None  # another bucket, host or key
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            signed_at = calendar.timegm(time.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
            expires = signed_at + int(query["X-Amz-Expires"])
            given = query["X-Amz-Signature"]
        except (KeyError, ValueError):
            return None
        if query.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" or (now or time.time()) > expires:
            return None
        if not _same(given, self._signature(url, query["X-Amz-Date"])):
            return None
        return task_id, name

    def _signature(self, url: str, timestamp: str) -> str:
        """SigV4 of a presigned URL (without its signature), as botocore signs one at ``timestamp``."""
        unsigned = re.sub(r"[&?]X-Amz-Signature=[^&]*", "", url)
        auth = S3SigV4QueryAuth(self._credentials.get_frozen_credentials(), "s3", self.region)
        request = AWSRequest(method="GET", url=unsigned)
        request.context["timestamp"] = timestamp
        canonical = auth.canonical_request(request)
        return auth.signature(auth.string_to_sign(request, canonical), request)


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _same(a: str, b: str) -> bool:
    """Compared as bytes: ``compare_digest`` raises on non-ASCII str, and a URL's query is anyone's text."""
    return hmac.compare_digest(a.encode("utf-8", "surrogateescape"), b.encode())
