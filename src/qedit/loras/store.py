"""LoRA sources -> files on disk with their sha256, and headers without the files.

Local files are used in place (their sha256 is computed once per size and mtime). URLs are
downloaded through the SSRF-safe fetcher into a content-addressed cache (``files/<sha256>``, with
``urls/<sha256 of the URL>`` remembering which file a URL gave), capped in size while streaming and
checked to be a whole safetensors file before they are kept. Hub repos go through
huggingface_hub's own cache (which also serves them offline once fetched).

``header`` is what the API calls at submit: it reads only a file's header, from disk, from the
first bytes of the URL's stream, or from the hub's safetensors metadata, so a request naming a
LoRA that is not allowed, not a LoRA, or too large is refused before anything is queued.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qedit.errors import InvalidInput
from qedit.files import write_atomic
from qedit.loras.anatomy import Anatomy, analyse, check_fits
from qedit.loras.header import SafetensorsHeader, TensorInfo, header_from_chunks, read_header
from qedit.loras.sources import LoraPolicy, Source, locate
from qedit.netfetch import open_url, stream_capped

DEFAULT_MAX_BYTES = 4 * 1024**3  # a rank-128 LoRA of the 20B transformer in fp32 is ~3 GB
CHUNK = 1 << 20


@dataclass(frozen=True)
class ResolvedLora:
    """A LoRA ready to load: its file and the identity recorded in every output's metadata."""

    source: Source
    file: Path
    sha256: str
    size: int
    private: bool = False  # the file's path is the server's business: messages show the name given

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def shown(self) -> str:
        """How error messages name it."""
        return self.source.given if self.private else str(self.file)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class LoraStore:
    """Resolves ``LoraSpec.path`` values under one policy. Thread-safe."""

    def __init__(
        self,
        policy: LoraPolicy,
        cache_dir: Path,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = 600.0,
        header_timeout: float = 15.0,
    ) -> None:
        self.policy = policy
        self.cache_dir = Path(cache_dir)
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.header_timeout = header_timeout
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    # -- without reading tensors (submit) ------------------------------------------------------

    def locate(self, given: str, field: str) -> Source:
        return locate(given, self.policy, field)

    def header(self, given: str, field: str) -> tuple[Source, SafetensorsHeader]:
        source = self.locate(given, field)
        if source.kind == "local":
            assert source.path is not None
            header = self._read_local(source, field)
        elif source.kind == "url":
            cached = self._cached_url(source)
            header = read_header(cached, field) if cached else self._url_header(source, field)
        else:
            header = self._hub_header(source, field)
        if header.file_bytes > self.max_bytes:
            raise InvalidInput(
                f"{given} is {header.file_bytes} bytes, at most {self.max_bytes} allowed for a LoRA", field=field
            )
        return source, header

    def _read_local(self, source: Source, field: str) -> SafetensorsHeader:
        """The header of a local file; a service's client is told the name it gave, not the server's path."""
        assert source.path is not None
        try:
            return read_header(source.path, field)
        except InvalidInput as e:
            if self.policy.show_paths:
                raise
            raise InvalidInput(e.message.replace(str(source.path), source.given), field=field) from None

    def check(self, given: str, field: str, transformer_config: dict[str, Any] | None = None) -> Anatomy:
        """Allowed, a LoRA, within the size cap and (given the model's config) of the model's shapes."""
        _, header = self.header(given, field)
        anatomy = analyse(header, given, field)  # messages name the LoRA as given
        if transformer_config is not None:
            check_fits(anatomy, transformer_config, given, field)
        return anatomy

    # -- to a file (the worker) ----------------------------------------------------------------

    def resolve(self, given: str, field: str) -> ResolvedLora:
        source = self.locate(given, field)
        if source.kind == "local":
            assert source.path is not None
            file = source.path
        elif source.kind == "url":
            file = self._cached_url(source) or self._download(source, field)
        else:
            file = self._hub_file(source, field)
        try:
            size = file.stat().st_size
        except OSError as e:
            raise InvalidInput(f"cannot read {file}: {e.strerror or e}", field=field) from None
        if size > self.max_bytes:
            raise InvalidInput(f"{given} is {size} bytes, at most {self.max_bytes} allowed for a LoRA", field=field)
        private = not self.policy.show_paths
        return ResolvedLora(source=source, file=file, sha256=self._sha256(file, field), size=size, private=private)

    def trusted(self, file: Path, field: str) -> ResolvedLora:
        """A file the operator configured (a Lightning LoRA): used in place, outside the allow-list."""
        try:
            size = file.stat().st_size
        except OSError as e:
            raise InvalidInput(f"cannot read {file}: {e.strerror or e}", field=field) from None
        source = Source("local", str(file), path=file)
        return ResolvedLora(source=source, file=file, sha256=self._sha256(file, field), size=size)

    def _sha256(self, file: Path, field: str) -> str:
        st = file.stat()
        key = (str(file.resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._hashes:
                return self._hashes[key]
        try:
            digest = sha256_file(file)
        except OSError as e:
            raise InvalidInput(f"cannot read {file}: {e.strerror or e}", field=field) from None
        with self._lock:
            self._hashes[key] = digest
        return digest

    # -- URLs ----------------------------------------------------------------------------------

    def _url_key(self, url: str) -> Path:
        return self.cache_dir / "urls" / hashlib.sha256(url.encode()).hexdigest()

    def _cached_url(self, source: Source) -> Path | None:
        assert source.url is not None
        try:
            digest = self._url_key(source.url).read_text().strip()
        except OSError:
            return None
        file = self.cache_dir / "files" / f"{digest}.safetensors"
        return file if file.is_file() else None

    def _url_header(self, source: Source, field: str) -> SafetensorsHeader:
        assert source.url is not None
        deadline = time.monotonic() + self.header_timeout
        with open_url(source.url, policy=self.policy.url, timeout=self.header_timeout, field=field) as r:
            chunks = stream_capped(
                r, max_bytes=self.max_bytes, deadline=deadline, timeout=self.header_timeout, field=field, what="LoRA"
            )
            return header_from_chunks(chunks, source.given, field)

    def _download(self, source: Source, field: str) -> Path:
        """Stream into the cache, hashing as it comes; kept only if it is a whole safetensors file."""
        assert source.url is not None
        files = self.cache_dir / "files"
        files.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.timeout
        fd, tmp_name = tempfile.mkstemp(prefix=".download-", dir=files)
        tmp = Path(tmp_name)
        h = hashlib.sha256()
        try:
            with (
                os.fdopen(fd, "wb") as out,
                open_url(source.url, policy=self.policy.url, timeout=self.timeout, field=field) as r,
            ):
                for chunk in stream_capped(
                    r, max_bytes=self.max_bytes, deadline=deadline, timeout=self.timeout, field=field, what="LoRA"
                ):
                    out.write(chunk)
                    h.update(chunk)
            read_header(tmp, field)  # a truncated or foreign file is refused, not cached
            digest = h.hexdigest()
            final = files / f"{digest}.safetensors"
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        key = self._url_key(source.url)
        key.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(key, digest.encode())
        return final

    # -- the hub -------------------------------------------------------------------------------

    def _hub_filename(self, source: Source, field: str) -> str:
        if source.filename:
            return source.filename
        from huggingface_hub import HfApi

        try:
            names = [n for n in HfApi().list_repo_files(source.repo_id or "") if n.endswith(".safetensors")]
        except Exception as e:
            raise InvalidInput(
                f"cannot list {source.repo_id} on the hub ({type(e).__name__}); name the file: "
                f"{source.repo_id}/FILE.safetensors",
                field=field,
            ) from None
        if "pytorch_lora_weights.safetensors" in names:
            return "pytorch_lora_weights.safetensors"
        if len(names) != 1:
            shown = ", ".join(names[:5]) or "none"
            raise InvalidInput(
                f"{source.repo_id} holds {len(names)} .safetensors files ({shown}); name one", field=field
            )
        return names[0]

    def _hub_file(self, source: Source, field: str) -> Path:
        from huggingface_hub import hf_hub_download

        filename = self._hub_filename(source, field)
        try:
            return Path(hf_hub_download(source.repo_id or "", filename, revision=source.revision))
        except Exception as e:
            raise InvalidInput(
                f"cannot fetch {source.repo_id}/{filename} from the hub: {type(e).__name__}: {str(e)[:200]}",
                field=field,
            ) from None

    def _hub_header(self, source: Source, field: str) -> SafetensorsHeader:
        from huggingface_hub import HfApi, try_to_load_from_cache

        filename = self._hub_filename(source, field)
        cached = try_to_load_from_cache(source.repo_id or "", filename, revision=source.revision)
        if isinstance(cached, str):
            return read_header(Path(cached), field)
        try:  # the header alone, by HTTP range requests
            file_meta = HfApi().parse_safetensors_file_metadata(
                source.repo_id or "", filename, revision=source.revision, timeout=self.header_timeout
            )
        except Exception as e:
            raise InvalidInput(
                f"cannot read {source.repo_id}/{filename} on the hub: {type(e).__name__}: {str(e)[:200]}", field=field
            ) from None
        tensors = {name: TensorInfo(dtype=t.dtype, shape=tuple(t.shape)) for name, t in file_meta.tensors.items()}
        return SafetensorsHeader(tensors=tensors, metadata=dict(file_meta.metadata or {}), header_bytes=0)
