"""Files of tasks in the data dir, and the signed, expiring URLs that serve them.

Inputs are kept as received (already validated) so a re-run after a crash sees the same bytes;
outputs are written atomically, every file 0600 and every folder 0700 (clients' images are
readable by the service's user only). A URL is
``{base}/v1/files/{task}/{name}?expires=T&sig=S``: it expires ``url_ttl_seconds`` after the task
finished, the same moment the sweeper deletes the file, so every URL given out is valid until then.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from qedit.files import PRIVATE_DIR, PRIVATE_FILE, write_atomic
from qedit.service.signing import sign_path, verify_path

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TASK_RE = re.compile(r"^[0-9a-f]{32}$")
_OWN_URL_RE = re.compile(r"^https?://[^/]+(?:/[^?]*)?/v1/files/([0-9a-f]{32})/([A-Za-z0-9_.-]{1,64})\?(.*)$")


class LocalStorage:
    def __init__(self, root: Path, secret: bytes, ttl_seconds: int) -> None:
        self.root = root
        self.secret = secret
        self.ttl = ttl_seconds

    # -- paths ------------------------------------------------------------------------------------

    def _dir(self, kind: str, task_id: str) -> Path:
        if not _TASK_RE.match(task_id):
            raise ValueError(f"bad task id {task_id!r}")
        return self.root / kind / task_id[:2] / task_id

    def absolute(self, relative: str) -> Path:
        """A stored relative path back to an absolute one, refusing anything outside the data dir."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"path {relative!r} leaves the data dir")
        return path

    def write_input(self, task_id: str, name: str, data: bytes) -> str:
        """Write an input file atomically; returns its path relative to the data dir."""
        path = self._folder("inputs", task_id) / name
        write_atomic(path, data, mode=PRIVATE_FILE)
        return str(path.relative_to(self.root))

    def output_path(self, task_id: str, name: str) -> Path:
        return self._folder("outputs", task_id) / name

    def write_output(self, task_id: str, name: str, data: bytes) -> Path:
        """An encoded result, written atomically and readable by the service's user only."""
        path = self.output_path(task_id, name)
        write_atomic(path, data, mode=PRIVATE_FILE)
        return path

    def _folder(self, kind: str, task_id: str) -> Path:
        folder = self._dir(kind, task_id)
        self.root.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        for level in (folder.parent.parent, folder.parent, folder):  # kind/ab/task: each 0700
            level.mkdir(exist_ok=True, mode=PRIVATE_DIR)
        return folder

    def output_relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    def served_file(self, task_id: str, name: str) -> Path | None:
        """A result (or uploaded) file by the id and name in its URL; None if not stored."""
        if not _TASK_RE.match(task_id) or not _NAME_RE.match(name):
            return None
        for kind in ("outputs", "uploads"):
            path = self._dir(kind, task_id) / name
            if path.is_file():
                return path
        return None

    def write_upload(self, upload_id: str, name: str, data: bytes) -> Path:
        """A client's upload (WaveSpeed's media upload), served like a result until it expires."""
        if not _NAME_RE.match(name):
            raise ValueError(f"bad file name {name!r}")
        path = self._folder("uploads", upload_id) / name
        write_atomic(path, data, mode=PRIVATE_FILE)
        return path

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
            shutil.rmtree(self._dir(kind, task_id), ignore_errors=True)

    # -- URLs -------------------------------------------------------------------------------------

    def expires_at(self, finished_at: float | None) -> int:
        return int((finished_at if finished_at is not None else time.time()) + self.ttl)

    def url(self, base_url: str, task_id: str, name: str, finished_at: float | None) -> str:
        expires = self.expires_at(finished_at)
        path = f"{task_id}/{name}"
        query = urlencode({"expires": expires, "sig": sign_path(self.secret, path, expires)})
        return f"{base_url.rstrip('/')}/v1/files/{path}?{query}"

    def check(self, task_id: str, name: str, expires: int, sig: str) -> str | None:
        return verify_path(self.secret, f"{task_id}/{name}", expires, sig)

    def own_file(self, url: str) -> tuple[str, Path] | None:
        """If ``url`` is one of our signed, unexpired file URLs (any host: the signature is the proof),
        the task (or upload) id and the file: read locally instead of fetching ourselves over HTTP."""
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
        path = self.served_file(task_id, name)
        return (task_id, path) if path is not None else None

    def upload_urls(self, base_url: str, upload_id: str, name: str) -> tuple[str, str, int]:
        """(PUT URL, download URL, expiry) for a new upload; both signed, both expiring."""
        expires = int(time.time() + self.ttl)
        put_path = f"put/{upload_id}/{name}"
        put = f"{base_url.rstrip('/')}/api/v3/media/uploads/{upload_id}/{name}?" + urlencode(
            {"expires": expires, "sig": sign_path(self.secret, put_path, expires)}
        )
        path = f"{upload_id}/{name}"
        get = f"{base_url.rstrip('/')}/v1/files/{path}?" + urlencode(
            {"expires": expires, "sig": sign_path(self.secret, path, expires)}
        )
        return put, get, expires

    def check_put(self, upload_id: str, name: str, expires: int, sig: str) -> str | None:
        return verify_path(self.secret, f"put/{upload_id}/{name}", expires, sig)
