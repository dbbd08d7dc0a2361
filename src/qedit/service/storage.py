"""Files of tasks, and the signed, expiring URLs that serve them: the data dir, or an S3 bucket.

``Storage`` is what the service keeps files through; ``LocalStorage`` (the data dir, the default)
and ``qedit.service.s3storage.S3Storage`` (``QEDIT_STORAGE_URL=s3://bucket/prefix``, for several
hosts) both implement it. Callers hand bytes in and get bytes out; what a task row records is a
relative key (``inputs/ab/<task>/0.png``, ``outputs/ab/<task>/0-a1.png``), the same in both, so
nothing above this module knows where the bytes are.

Inputs are kept as received (already validated) so a re-run after a crash sees the same bytes. In
the data dir outputs are written atomically, every file 0600 and every folder 0700 (clients' images
are readable by the service's user only). A local URL is ``{base}/v1/files/{task}/{name}?expires=T&sig=S``:
it expires ``url_ttl_seconds`` after the task finished, the same moment the sweeper deletes the
file, so every URL given out is valid until then. (S3 result URLs are presigned GETs expiring at
that same moment: see ``s3storage``.)
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs, urlencode

from qedit.errors import QeditError
from qedit.files import PRIVATE_DIR, PRIVATE_FILE, write_atomic
from qedit.service.signing import sign_path, verify_path

if TYPE_CHECKING:
    from qedit.config import Settings

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TASK_RE = re.compile(r"^[0-9a-f]{32}$")
_OWN_URL_RE = re.compile(r"^https?://[^/]+(?:/[^?]*)?/v1/files/([0-9a-f]{32})/([A-Za-z0-9_.-]{1,64})\?(.*)$")
SERVED_KINDS = ("outputs", "uploads")  # what a file URL may name; inputs are never served


def task_key(kind: str, task_id: str, name: str | None = None) -> str:
    """``kind/ab/<task>[/name]``: the relative key every storage files a task's (or upload's) file under."""
    if not TASK_RE.match(task_id):
        raise ValueError(f"bad task id {task_id!r}")
    if name is not None and not NAME_RE.match(name):
        raise ValueError(f"bad file name {name!r}")
    folder = f"{kind}/{task_id[:2]}/{task_id}"
    return folder if name is None else f"{folder}/{name}"


class StorageUnavailable(QeditError):
    """The shared storage did not answer (an outage, not the request's fault): a 503 at submit, and a
    worker's run that meets one is left to its lease, to run again, instead of failing the task."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="QEDIT_STORAGE_URL", status=503)


class Storage(Protocol):
    """Where inputs, outputs and uploads live; every key given out and taken back is relative."""

    ttl: int

    def write_input(self, task_id: str, name: str, data: bytes) -> str:
        """Store a validated input; returns its key."""
        ...

    def write_output(self, task_id: str, name: str, data: bytes) -> str:
        """Store an encoded result; returns its key."""
        ...

    def write_upload(self, upload_id: str, name: str, data: bytes) -> str:
        """Store a client's upload (WaveSpeed's media upload), served like a result until it expires."""
        ...

    def read(self, key: str) -> bytes:
        """A stored file's bytes; ``FileNotFoundError`` if it is not stored, ``ValueError`` for a bad key."""
        ...

    def delete(self, key: str) -> None:
        """Remove one file; a missing one is not an error."""
        ...

    def delete_task_files(self, task_id: str) -> None: ...

    def delete_old_uploads(self, before: float) -> int:
        """Remove uploads stored before ``before`` (Unix time); returns how many."""
        ...

    def read_served(self, task_id: str, name: str) -> bytes | None:
        """A result or upload by the id and name in its ``/v1/files`` URL; None if not stored."""
        ...

    def expires_at(self, finished_at: float | None) -> int: ...

    def url(self, base_url: str, task_id: str, name: str, finished_at: float | None) -> str:
        """The URL a client downloads an output from, valid until ``expires_at(finished_at)``."""
        ...

    def check(self, task_id: str, name: str, expires: int, sig: str) -> str | None:
        """A ``/v1/files`` URL's signature: None if valid, else why not."""
        ...

    def own_file(self, url: str) -> tuple[str, bytes] | None:
        """If ``url`` is a valid, unexpired URL this service gave out, the task (or upload) id and the bytes."""
        ...

    def upload_urls(self, base_url: str, upload_id: str, name: str) -> tuple[str, str, int]:
        """(PUT URL, download URL, expiry) for a new upload."""
        ...

    def check_put(self, upload_id: str, name: str, expires: int, sig: str) -> str | None: ...


def open_storage(settings: Settings, secret: bytes) -> Storage:
    """The storage ``settings`` name: the data dir, or the S3 bucket of ``storage_url`` (checked now)."""
    if settings.storage_url:
        try:
            from qedit.service.s3storage import S3Storage  # boto3 only where S3 is used
        except ModuleNotFoundError as e:
            if e.name not in ("boto3", "botocore"):
                raise
            raise QeditError("S3 storage needs boto3: pip install 'qedit[scale]'", field="QEDIT_STORAGE_URL") from None

        return S3Storage.from_settings(settings, secret)
    return LocalStorage(settings.data_dir, secret, settings.url_ttl_seconds)


class SignedUploads:
    """What both storages sign with the service's secret: ``/v1/files`` URLs and upload PUT URLs.

    The PUT always comes to this service (never straight to a bucket): the bytes are validated as
    an image before they are stored.
    """

    def __init__(self, secret: bytes, ttl_seconds: int) -> None:
        self.secret = secret
        self.ttl = ttl_seconds

    def expires_at(self, finished_at: float | None) -> int:
        return int((finished_at if finished_at is not None else time.time()) + self.ttl)

    def signed_file_url(self, base_url: str, task_id: str, name: str, expires: int) -> str:
        path = f"{task_id}/{name}"
        query = urlencode({"expires": expires, "sig": sign_path(self.secret, path, expires)})
        return f"{base_url.rstrip('/')}/v1/files/{path}?{query}"

    def check(self, task_id: str, name: str, expires: int, sig: str) -> str | None:
        return verify_path(self.secret, f"{task_id}/{name}", expires, sig)

    def signed_own_url(self, url: str) -> tuple[str, str] | None:
        """(id, name) of a valid, unexpired ``/v1/files`` URL of ours (any host: the signature is the proof)."""
        m = _OWN_URL_RE.match(url)
        if not m:
            return None
        task_id, name, query = m.group(1), m.group(2), parse_qs(m.group(3))
        try:
            expires, sig = int(query["expires"][0]), query["sig"][0]
        except (KeyError, ValueError, IndexError):
            return None
        if self.check(task_id, name, expires, sig) is not None:
            return None
        return task_id, name

    def put_url(self, base_url: str, upload_id: str, name: str, expires: int) -> str:
        put_path = f"put/{upload_id}/{name}"
        return f"{base_url.rstrip('/')}/api/v3/media/uploads/{upload_id}/{name}?" + urlencode(
            {"expires": expires, "sig": sign_path(self.secret, put_path, expires)}
        )

    def check_put(self, upload_id: str, name: str, expires: int, sig: str) -> str | None:
        return verify_path(self.secret, f"put/{upload_id}/{name}", expires, sig)


class LocalStorage(SignedUploads):
    """The data dir: one machine (or a shared filesystem), served by ``/v1/files``."""

    def __init__(self, root: Path, secret: bytes, ttl_seconds: int) -> None:
        super().__init__(secret, ttl_seconds)
        self.root = root

    # -- paths ------------------------------------------------------------------------------------

    def absolute(self, relative: str) -> Path:
        """A stored relative path back to an absolute one, refusing anything outside the data dir."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"path {relative!r} leaves the data dir")
        return path

    def _write(self, kind: str, task_id: str, name: str, data: bytes) -> str:
        key = task_key(kind, task_id, name)
        path = self.root / key
        self.root.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        for level in (path.parent.parent.parent, path.parent.parent, path.parent):  # kind/ab/task: each 0700
            level.mkdir(exist_ok=True, mode=PRIVATE_DIR)
        write_atomic(path, data, mode=PRIVATE_FILE)
        return key

    def write_input(self, task_id: str, name: str, data: bytes) -> str:
        return self._write("inputs", task_id, name, data)

    def write_output(self, task_id: str, name: str, data: bytes) -> str:
        return self._write("outputs", task_id, name, data)

    def write_upload(self, upload_id: str, name: str, data: bytes) -> str:
        return self._write("uploads", upload_id, name, data)

    def read(self, key: str) -> bytes:
        return self.absolute(key).read_bytes()

    def delete(self, key: str) -> None:
        self.absolute(key).unlink(missing_ok=True)

    def served_file(self, task_id: str, name: str) -> Path | None:
        """A result (or uploaded) file by the id and name in its URL; None if not stored."""
        if not TASK_RE.match(task_id) or not NAME_RE.match(name):
            return None
        for kind in SERVED_KINDS:
            path = self.root / task_key(kind, task_id, name)
            if path.is_file():
                return path
        return None

    def read_served(self, task_id: str, name: str) -> bytes | None:
        path = self.served_file(task_id, name)
        try:
            return path.read_bytes() if path is not None else None
        except OSError:  # deleted by the sweeper meanwhile
            return None

    def delete_old_uploads(self, before: float) -> int:
        n = 0
        for folder in (self.root / "uploads").glob("*/*"):
            try:
                if folder.stat().st_mtime < before:
                    shutil.rmtree(folder, ignore_errors=True)
                    n += 1
            except OSError:
                continue
        return n

    def delete_task_files(self, task_id: str) -> None:
        for kind in ("inputs", "outputs"):
            shutil.rmtree(self.root / task_key(kind, task_id), ignore_errors=True)

    # -- URLs -------------------------------------------------------------------------------------

    def url(self, base_url: str, task_id: str, name: str, finished_at: float | None) -> str:
        return self.signed_file_url(base_url, task_id, name, self.expires_at(finished_at))

    def own_file(self, url: str) -> tuple[str, bytes] | None:
        """Read locally instead of fetching ourselves over HTTP."""
        own = self.signed_own_url(url)
        if own is None:
            return None
        data = self.read_served(*own)
        return (own[0], data) if data is not None else None

    def upload_urls(self, base_url: str, upload_id: str, name: str) -> tuple[str, str, int]:
        """Both signed, both expiring ``url_ttl_seconds`` from now."""
        expires = int(time.time() + self.ttl)
        return (
            self.put_url(base_url, upload_id, name, expires),
            self.signed_file_url(base_url, upload_id, name, expires),
            expires,
        )
