"""Service settings: one validated object built from ``QEDIT_*`` variables, passed to everything.

Nothing reads the environment at import time: ``Settings()`` is called by ``qedit serve`` /
``qedit worker`` (or by a test with explicit values) and handed to ``create_app(settings)`` and
``build_worker(settings)``, so two apps with different settings can live in one process.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from qedit.errors import InvalidInput
from qedit.models.options import CfgBatch, EngineOptions, Offload, Quantize, StepCache

DEFAULT_PRICE_PER_IMAGE = 0.0319  # the aggregator's list price, so usage reports read like a bill
GIB = 1024**3
_ENGINE = EngineOptions()  # the defaults of the engine options live there, once

SETTING_OF_OPTION = {"cache": "step_cache"}
"""``EngineOptions`` field -> settings field, where they differ: ``QEDIT_CACHE`` is the model cache's folder."""


class SettingError(ValueError):
    """A refused value found by a check across settings; names the setting, so the message can name its variable."""

    def __init__(self, message: str, field: str, value: Any) -> None:
        super().__init__(message)
        self.field, self.value = field, value


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/qedit``, else ``~/.local/share/qedit``: the service's files, the Lightning folder."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "qedit"


_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ENDPOINT_RE = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")


def parse_storage_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, ``prefix/``); the prefix may be empty. ``ValueError`` names what is wrong."""
    scheme, sep, rest = url.strip().partition("://")
    if scheme != "s3" or not sep:
        raise ValueError("must be s3://bucket[/prefix] (leave it unset for the data dir)")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.match(bucket):
        raise ValueError(f"bucket {bucket!r} is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')")
    parts = [p for p in prefix.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError("the prefix must not contain '.' or '..'")
    return bucket, "".join(p + "/" for p in parts)


class Settings(BaseSettings):
    """Every knob of ``qedit serve`` and ``qedit worker``; env var = ``QEDIT_`` + upper-case name."""

    # populate_by_name: fields with an env alias (lightning_dirs) still take their own name as a keyword
    model_config = SettingsConfigDict(env_prefix="QEDIT_", extra="ignore", populate_by_name=True)

    # -- the engine -------------------------------------------------------------------------------
    model: str = Field(
        default="tiny",
        description="spec name, snapshot dir or hub id; 'instant' is the dry-run stand-in (no torch, no weights)",
    )
    device: str | None = None
    dtype: str | None = None
    instant_step_delay: float = Field(default=0.0, ge=0.0, le=10.0, description="seconds per step of 'instant'")
    instant_steps: int = Field(default=4, ge=1, le=100, description="steps the 'instant' engine reports")

    # -- how the engine runs (qedit.models.options.EngineOptions; checked there, docs/speed.md) -----
    offload: Offload = Field(default=_ENGINE.offload, description="none, model, group or sequential (CUDA only)")
    quantize: Quantize = Field(default=_ENGINE.quantize, description="the transformer's weights: none, int8, fp8, ...")
    gguf_file: Path | None = Field(default=_ENGINE.gguf_file, description="transformer weights as GGUF (quantize=gguf)")
    step_cache: StepCache = Field(
        default=_ENGINE.cache, description="EngineOptions.cache: none, dbcache or taylorseer (QEDIT_STEP_CACHE)"
    )
    cache_threshold: float = Field(default=_ENGINE.cache_threshold, description="the step cache's residual threshold")
    cache_warmup: int = Field(default=_ENGINE.cache_warmup, description="steps always computed before reusing one")
    compile: bool = Field(default=_ENGINE.compile, description="torch.compile the repeated transformer blocks")
    cfg_batch: CfgBatch = Field(default=_ENGINE.cfg_batch, description="both CFG branches in one call: auto, on, off")
    text_cache: int = Field(default=_ENGINE.text_cache, description="prompt encodings kept for reuse; 0 = off")
    batch_size: int = Field(
        default=1, ge=1, le=16, description="queued compatible tasks a worker denoises together; 1 = no batching"
    )
    batch_wait: float = Field(
        default=0.05, ge=0.0, le=5.0, description="seconds a worker waits for compatible tasks to fill a batch"
    )

    # -- where things live --------------------------------------------------------------------------
    data_dir: Path = Field(default_factory=default_data_dir, description="inputs, outputs, SQLite db, secrets")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite in data_dir")
    public_url: str | None = Field(
        default=None, description="base of result URLs (behind a proxy); default: the URL the client called"
    )
    storage_url: str | None = Field(
        default=None, description="s3://bucket/prefix: inputs and outputs in S3-compatible storage; default: data_dir"
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3 API endpoint (MinIO, R2...); default: AWS")
    s3_region: str | None = Field(default=None, description="the bucket's region; default: boto3's (else us-east-1)")
    s3_public_endpoint_url: str | None = Field(
        default=None, description="endpoint named in presigned result URLs, if clients reach S3 by another host"
    )
    s3_create_bucket: bool = Field(default=False, description="development: create the bucket if it is missing")

    # -- HTTP --------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    auth: Literal["keys", "none"] = Field(
        default="keys", description="'none' (local mode, every caller is anonymous) only when started so"
    )
    secret: str | None = Field(
        default=None, description="signs URLs and webhooks; default: generated once into data_dir/secret"
    )

    # -- inputs ------------------------------------------------------------------------------------
    min_side: int = Field(default=384, ge=1, description="smallest input side in px")
    max_side: int = Field(default=3072, ge=1, description="largest input side in px")
    max_images: int = Field(default=3, ge=1, le=3)
    max_input_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="per image, checked while streaming")
    fetch_timeout: float = Field(
        default=10.0, gt=0, le=120, description="one image fetch in all: connect, headers, redirects, body"
    )
    max_body_bytes: int | None = Field(
        default=None, ge=1024, description="request body cap, before parsing; default from the image limits"
    )
    fetch_threads: int = Field(default=32, ge=1, le=512, description="threads for submissions' outbound fetches")
    fetch_per_key: int = Field(default=4, ge=1, le=512, description="a key's submissions fetching at once (more: 429)")
    allow_private_urls: bool = Field(
        default=False, description="let image URLs and webhooks reach loopback/private/link-local addresses"
    )
    allow_http_urls: bool = Field(default=False, description="dev only: accept http:// image URLs and webhooks")

    # -- LoRAs (docs/service.md#loras): what a request may name, and what a worker keeps loaded ---------
    lora_dirs: Annotated[list[Path] | None, NoDecode] = Field(
        default=None,
        description="folders whose .safetensors files requests may name (comma-separated); "
        "default: data_dir/loras; empty: none",
    )
    lora_hub_orgs: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="hub organisations LoRAs may come from (comma-separated; * = any)"
    )
    lora_url_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="hosts LoRA URLs may point at (comma-separated; .example.com = its subdomains; * = any)",
    )
    lora_max_bytes: int = Field(default=4 * GIB, ge=1024, description="largest LoRA file accepted")
    lora_cache_dir: Path | None = Field(
        default=None, description="where LoRAs downloaded from URLs are kept; default: data_dir/lora-cache"
    )
    lora_loaded_max: int = Field(default=8, ge=1, le=256, description="adapters a worker keeps on its model (LRU)")
    lora_loaded_max_bytes: int = Field(default=4 * GIB, ge=0, description="and their bytes at most")
    lightning_dirs: Annotated[list[Path] | None, NoDecode] = Field(
        default=None,
        validation_alias=AliasChoices("QEDIT_LIGHTNING_DIRS", "QEDIT_LIGHTNING_DIR"),
        description="folders with the Lightning LoRAs of `fast` (after the snapshot's own lightning/); "
        "default: data_dir/lightning",
    )

    # -- tasks -------------------------------------------------------------------------------------
    dispatch: Literal["embedded", "celery"] = "embedded"
    workers: int = Field(default=1, ge=0, le=64, description="in-process worker threads (embedded); 0 = API only")
    broker_url: str = "redis://127.0.0.1:6379/0"
    celery_queue: str = Field(
        default="qedit", description="prefix of the Celery queues: one per model, {celery_queue}.{model slug}"
    )
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="models requests may name besides `model` and those with live workers (comma-separated)",
    )
    no_worker: Literal["wait", "refuse"] = Field(
        default="wait",
        description="a request for a known model no live worker serves: queued until one comes (wait) or 503 (refuse)",
    )
    worker_ttl: float = Field(
        default=15.0, ge=1.0, le=3600.0, description="a worker not heard from for this long is not live"
    )
    lease_seconds: float = Field(
        default=60.0, gt=0, description="a running task not heard from for this long is re-run elsewhere"
    )
    max_attempts: int = Field(default=3, ge=1, le=20, description="runs of one task before it is failed")
    sweep_interval: float = Field(default=5.0, gt=0, description="seconds between recovery/cleanup sweeps")
    sync_timeout: float = Field(default=120.0, gt=0, description="longest a sync request waits for its result")
    url_ttl_seconds: int = Field(default=24 * 3600, ge=1, description="result URLs and files live this long")

    # -- webhooks ----------------------------------------------------------------------------------
    webhook_timeout: float = Field(default=10.0, gt=0, le=60)
    webhook_retries: int = Field(default=3, ge=0, le=10)
    webhook_backoff: float = Field(default=2.0, ge=0, description="first retry delay; doubles each retry")

    # -- keys, limits, usage -----------------------------------------------------------------------
    price_per_image: float = Field(default=DEFAULT_PRICE_PER_IMAGE, ge=0)
    rate_limit_rpm: int = Field(default=600, ge=1, description="requests per minute per key (keys may override)")
    rate_limit_url: str | None = Field(
        default=None,
        description="redis:// URL to share the per-key rate limit between API processes (default: per process)",
    )
    max_concurrent_tasks: int = Field(default=8, ge=1, description="queued+running per key (keys may override)")

    # -- backends (docs/service.md#backends): local workers, other qedit servers, hosted WaveSpeed APIs --
    backends_file: Path | None = Field(
        default=None, description="TOML file of [[backend]] tables to route tasks to; default: local workers only"
    )
    backend_failures: int = Field(default=3, ge=1, le=100, description="consecutive failures that mark a backend down")
    backend_backoff: float = Field(
        default=1.0, gt=0, le=3600, description="seconds before a down backend is checked again; doubles each time"
    )
    backend_backoff_max: float = Field(default=60.0, gt=0, le=86400, description="the longest such wait")

    @field_validator("lora_hub_orgs", "lora_url_hosts", "models", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        """``a,b`` from the environment."""
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v

    @field_validator("lora_dirs", "lightning_dirs", mode="before")
    @classmethod
    def _folders(cls, v: Any) -> Any:
        """``a,b`` from the environment, or ``a:b`` as ``PATH`` (and ``QEDIT_LIGHTNING_DIR``) are written."""
        return [p.strip() for p in v.replace(os.pathsep, ",").split(",") if p.strip()] if isinstance(v, str) else v

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, v: str | None) -> str | None:
        if v is not None and v.strip():
            parse_storage_url(v)
            return v.strip()
        return None

    @field_validator("s3_endpoint_url", "s3_public_endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and v.strip():
            if not _ENDPOINT_RE.match(v.strip()):
                raise ValueError("must be an http(s):// URL of the S3 API, e.g. http://127.0.0.1:9000")
            return v.strip().rstrip("/")
        return None

    @model_validator(mode="after")
    def _sides(self) -> Settings:
        if self.min_side > self.max_side:
            raise ValueError(f"min_side {self.min_side} > max_side {self.max_side}")
        return self

    @model_validator(mode="after")
    def _engine(self) -> Settings:
        """The engine options checked where they are defined (``EngineOptions.check``), now, not at load."""
        try:
            options = self.engine_options()
            if self.device and self.model != "instant":
                options.check_device(self.device)
        except InvalidInput as e:
            field = SETTING_OF_OPTION.get(e.field or "", e.field or "")
            raise SettingError(e.message, field, getattr(self, field, None)) from None
        if self.batch_size > 1 and self.batch_wait > self.lease_seconds / 4:
            raise SettingError(
                f"must be at most a quarter of lease_seconds ({self.lease_seconds}): the first task of a batch "
                "holds its lease while it waits",
                "batch_wait",
                self.batch_wait,
            )
        return self

    @model_validator(mode="after")
    def _data_dir_defaults(self) -> Settings:
        """Defaults that live under ``data_dir``, which is itself a setting."""
        if self.lora_dirs is None:
            self.lora_dirs = [self.data_dir / "loras"]
        if self.lora_cache_dir is None:
            self.lora_cache_dir = self.data_dir / "lora-cache"
        if self.lightning_dirs is None:
            self.lightning_dirs = [self.data_dir / "lightning"]
        return self

    @property
    def body_limit(self) -> int:
        """``max_body_bytes``, else room for every image and a mask as base64 (4/3 of the bytes)
        plus 1 MiB for the rest of the JSON or form: a valid request always fits, nothing much more."""
        if self.max_body_bytes is not None:
            return self.max_body_bytes
        return (self.max_images + 1) * self.max_input_bytes * 4 // 3 + 1024 * 1024

    def engine_options(self) -> EngineOptions:
        """The one ``EngineOptions`` the worker loads its engine with (and ``/readyz``, ``/metrics`` report)."""
        names = [f.name for f in dataclasses.fields(EngineOptions)]
        return EngineOptions(**{name: getattr(self, SETTING_OF_OPTION.get(name, name)) for name in names})

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'qedit.db'}"
