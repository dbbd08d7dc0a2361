"""A real S3 server on loopback for tests: moto's standalone server (HTTP, SigV4, its own state).

Not a mock of boto3: the storage's boto3 client, ``qedit serve`` subprocesses and httpx all talk to
it over TCP like to MinIO or AWS. ``moto_s3`` is the body of a (module- or session-scoped) fixture;
each test takes a bucket of its own (``new_bucket``), so tests never see each other's keys.
Moto checks neither presigned signatures nor their expiry: tests of those check the URL's fields
and qedit's own verification.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from tests.support.server import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "qedit-test",
    "AWS_SECRET_ACCESS_KEY": "qedit-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    # nothing but these: no ~/.aws profile, no instance metadata lookups
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
}


class MotoS3:
    """``moto.server.ThreadedMotoServer`` on 127.0.0.1 at a free port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def new_bucket(self, create: bool = True) -> str:
        name = f"qedit-{uuid.uuid4().hex[:12]}"
        if create:
            self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """What a ``qedit serve`` / ``qedit worker`` process needs to store into ``bucket``."""
        url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return {**CREDENTIALS, "QEDIT_STORAGE_URL": url, "QEDIT_S3_ENDPOINT_URL": self.endpoint}

    def stop(self) -> None:
        self._server.stop()


def moto_s3() -> Iterator[MotoS3]:
    """Body of a session fixture: the server, stopped at the end."""
    server = MotoS3()
    try:
        yield server
    finally:
        server.stop()
