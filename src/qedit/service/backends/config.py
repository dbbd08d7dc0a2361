"""The backends file: TOML, one ``[[backend]]`` table per backend, validated before anything starts.

A bad file is one line naming the file, the backend and the field (``qedit serve`` exits 2), so an
operator fixes it before the gateway takes a single task. Keys are never in the parsed model's
``repr`` and never logged: ``key_env`` names the variable that holds one, read once at load.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from qedit.errors import InvalidInput, quote
from qedit.service.workers import served_model

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Kind = Literal["local", "qedit", "wavespeed"]
ANY_MODEL = "*"
DEFAULT_HEALTH = {"local": None, "qedit": "/readyz", "wavespeed": None}


class BackendConfig(BaseModel):
    """One backend: where it is, what it serves, what it costs, how much it takes at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="shown in task chains and /v1/backends")
    kind: Kind
    url: str | None = Field(default=None, description="base URL of a qedit server or a WaveSpeed v3 API")
    key: SecretStr | None = Field(default=None, description="the operator's key for it (prefer key_env)")
    key_env: str | None = Field(default=None, description="environment variable holding the key")
    models: list[str] | None = Field(
        default=None, description="model names it serves ('*' = any); local: default the server's model"
    )
    price_per_image: float | None = Field(default=None, ge=0, description="USD; local: default QEDIT_PRICE_PER_IMAGE")
    priority: int = Field(default=0, description="tie-break between equal prices: lower first")
    max_concurrency: int = Field(default=4, ge=1, le=1024, description="its tasks in flight at once")
    timeout: float = Field(default=600.0, gt=0, description="seconds one task may take there before it moves on")
    request_timeout: float = Field(default=30.0, gt=0, le=600, description="one HTTP request to it")
    poll_interval: float = Field(default=0.2, gt=0, le=60, description="seconds between result polls")
    health_path: str | None = Field(default=None, description="GET path that answers 2xx when up")
    health_interval: float = Field(default=10.0, gt=0, description="seconds between checks while up")
    model_path: str = Field(
        default="wavespeed-ai/qwen-image/edit-plus", description="wavespeed: the endpoint under /api/v3"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL (got {quote(v)})")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _kind_fields(self) -> BackendConfig:
        if self.kind != "local" and not self.url:
            raise ValueError("url: a remote backend needs one")
        if self.kind == "local" and self.url:
            raise ValueError("url: a local backend has none (it is this server's own workers)")
        if self.kind != "local" and not self.models:
            raise ValueError("models: say which models it serves (['*'] for any)")
        if self.key is not None and self.key_env is not None:
            raise ValueError("key_env: give key or key_env, not both")
        if self.key_env is not None and not os.environ.get(self.key_env):
            raise ValueError(f"key_env: the variable {self.key_env} is not set")
        return self

    @property
    def secret(self) -> str | None:
        if self.key is not None:
            return self.key.get_secret_value()
        return os.environ.get(self.key_env) if self.key_env else None

    @property
    def health(self) -> str | None:
        return self.health_path if self.health_path is not None else DEFAULT_HEALTH[self.kind]

    def serves(self, model: str) -> bool:
        """Tasks store their model's canonical id (``served_model``); the file may name it either way."""
        models = self.models or []
        return ANY_MODEL in models or served_model(model) in {served_model(m) for m in models}


class BackendsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: list[BackendConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> BackendsFile:
        names = [b.name for b in self.backend]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"name: {name!r} is used twice")
        if sum(b.kind == "local" for b in self.backend) > 1:
            raise ValueError("kind: at most one local backend")
        return self


def load_backends(path: Path, *, model: str, local_price: float) -> list[BackendConfig]:
    """The file's backends, local defaults filled in (``model``: the server's; ``local_price``: its price).

    Raises ``InvalidInput`` whose message is ``FILE: backend NAME: FIELD: problem``.
    """
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as e:
        raise InvalidInput(f"{path}: cannot be read: {e.strerror or e}", field="backends_file") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidInput(f"{path}: not valid TOML: {e}", field="backends_file") from None
    try:
        parsed = BackendsFile.model_validate(raw)
    except ValidationError as e:
        raise InvalidInput(_where(path, raw, e), field="backends_file") from None
    out = []
    for b in parsed.backend:
        if b.kind == "local":
            b = b.model_copy(
                update={
                    "models": b.models or [model],
                    "price_per_image": local_price if b.price_per_image is None else b.price_per_image,
                }
            )
        elif b.price_per_image is None:
            raise InvalidInput(f"{path}: backend {b.name}: price_per_image: required for a remote backend")
        out.append(b)
    return out


def _where(path: Path, raw: object, e: ValidationError) -> str:
    """``FILE: backend NAME: FIELD: message`` for the first error."""
    err = e.errors()[0]
    loc = list(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    where = str(path)
    if len(loc) >= 2 and loc[0] == "backend" and isinstance(loc[1], int):
        entries = raw.get("backend") if isinstance(raw, dict) else None
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else {}
        name = entry.get("name") if isinstance(entry, dict) else None
        where += f": backend {name or '#' + str(loc[1] + 1)}"
        loc = loc[2:]
    field = ".".join(str(p) for p in loc)
    got = f" (got {quote(err['input'])})" if field and err["type"] != "missing" and "input" in err else ""
    return f"{where}: {field}: {msg}{got}" if field else f"{where}: {msg}"
