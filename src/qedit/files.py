"""Atomic file writes: a reader (or a crash) sees the old file or the whole new one, never half.

Every file qedit writes that someone may read while it is written goes through here: edited
images, session records, task inputs and uploads, the service's secret. The bytes go to a hidden
temporary file in the same directory, created with its final permissions (so a secret is never
readable by others, even for an instant), are fsynced, then renamed (or linked) into place.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

PRIVATE_FILE = 0o600  # the service's data: tasks' inputs and outputs, the database, the secret
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (created so, or narrowed if it is wider).

    The service's data dir holds every client's images and the signing secret; other local users
    must not read them whatever the umask (the files inside are 0600 as well).
    """
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_DIR)
    return path


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist, else narrow it to 0600.

    For files another library creates (SQLite's database): made first by us, they never exist
    readable by others, even for an instant.
    """
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_FILE)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o666, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path``; ``mode`` is masked by the umask as for any new file.

    ``exclusive``: only if ``path`` does not exist yet (the first of racing writers wins, the others
    get False and keep the winner's file). Raises ``OSError`` for the caller to word.
    """
    tmp = _create_temp(path, mode)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return True


def _create_temp(path: Path, mode: int) -> Path:
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file next to {path}")


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); best effort elsewhere."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
