"""HMAC in one place: the server secret, signed expiring file URLs, and webhook signatures.

One secret per installation (``QEDIT_SECRET`` or generated once into ``data_dir/secret``) so that a
restarted server, or a Celery worker sharing the data dir, signs exactly like the API. Each API key
gets its own webhook secret derived from it, so a customer can verify only their own deliveries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from pathlib import Path

from qedit.config import Settings
from qedit.files import PRIVATE_FILE, private_dir, private_file, write_atomic


def load_secret(settings: Settings) -> bytes:
    """``QEDIT_SECRET``, else the one in the data dir, created atomically on first use."""
    if settings.secret:
        return settings.secret.encode()
    path = private_dir(settings.data_dir) / "secret"
    if not path.exists():
        # created 0600 (never wider, even briefly); if another process won the race, theirs is used
        write_atomic(path, secrets.token_hex(32).encode(), mode=PRIVATE_FILE, exclusive=True)
    else:
        private_file(path)  # one an operator copied in with a wider mode is narrowed
    return Path(path).read_text().strip().encode()


def _mac(secret: bytes, message: str) -> str:
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()


def sign_path(secret: bytes, path: str, expires: int) -> str:
    return _mac(secret, f"file:{path}:{expires}")[:40]


def verify_path(secret: bytes, path: str, expires: int, signature: str, now: float | None = None) -> str | None:
    """None if valid, else why not ("expired" / "bad signature").

    Compared as bytes: ``hmac.compare_digest`` raises on a str with non-ASCII characters, and a
    signature comes from a URL anyone can type.
    """
    given = signature.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(sign_path(secret, path, expires).encode(), given):
        return "bad signature"
    if (now if now is not None else time.time()) > expires:
        return "expired"
    return None


def webhook_secret(secret: bytes, key_id: str | None) -> str:
    """The secret a key's webhooks are signed with (what ``GET .../webhook/secret`` shows that key)."""
    raw = hmac.new(secret, f"webhook:{key_id or 'anonymous'}".encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(raw).decode()


def _secret_bytes(whsec: str) -> bytes:
    return base64.b64decode(whsec.removeprefix("whsec_"))


def standard_signature(whsec: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: ``v1,`` + base64 HMAC-SHA256 of ``{id}.{timestamp}.{body}`` keyed by the decoded secret."""
    mac = hmac.new(_secret_bytes(whsec), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def wavespeed_signature(whsec: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """WaveSpeed v3: ``v3,`` + hex HMAC-SHA256 of ``{id}.{timestamp}.{raw body}`` keyed by the secret string."""
    mac = hmac.new(whsec.encode(), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return "v3," + mac
