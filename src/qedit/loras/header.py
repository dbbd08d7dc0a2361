"""A safetensors file's header: every tensor's name, dtype and shape, without reading a tensor.

The format is 8 bytes (little-endian length N), then N bytes of JSON. Reading only those is how the
API vets a LoRA at submit and how ``qedit lora inspect`` describes a file of any size in
milliseconds; a stream (an URL being downloaded) is read just as far.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from qedit.errors import InvalidInput

MAX_HEADER_BYTES = 16 * 1024 * 1024  # real LoRA headers are well under 1 MB

DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        n = DTYPE_BYTES.get(self.dtype, 0)
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    header_bytes: int

    @property
    def data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def file_bytes(self) -> int:
        return 8 + self.header_bytes + self.data_bytes


def _length(prefix: bytes, source: str, field: str) -> int:
    if len(prefix) < 8:
        raise InvalidInput(f"{source} is not a safetensors file (shorter than its 8-byte header length)", field=field)
    (n,) = struct.unpack("<Q", prefix[:8])
    if n < 2 or n > MAX_HEADER_BYTES:
        raise InvalidInput(
            f"{source} is not a safetensors file (header length {n}, at most {MAX_HEADER_BYTES} allowed)", field=field
        )
    return n


def parse_header(raw: bytes, source: str, field: str) -> SafetensorsHeader:
    """``raw`` holds the JSON header (the bytes after the 8-byte length)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput(f"{source} is not a safetensors file (its header is not JSON: {e})", field=field) from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{source} is not a safetensors file (its header is not a JSON object)", field=field)
    meta = data.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    for name, info in data.items():
        try:
            tensors[name] = TensorInfo(dtype=str(info["dtype"]), shape=tuple(int(d) for d in info["shape"]))
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(f"{source}: tensor {name!r} has a malformed header entry", field=field) from None
    metadata = {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    return SafetensorsHeader(tensors=tensors, metadata=metadata, header_bytes=len(raw))


def read_header(path: Path, field: str) -> SafetensorsHeader:
    """The header of a file on disk; a truncated file is an error naming it."""
    try:
        with path.open("rb") as f:
            n = _length(f.read(8), str(path), field)
            raw = f.read(n)
            size = path.stat().st_size
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror or e}", field=field) from None
    if len(raw) < n:
        raise InvalidInput(f"{path} is truncated (its header is cut short)", field=field)
    header = parse_header(raw, str(path), field)
    if size < header.file_bytes:
        raise InvalidInput(f"{path} is truncated ({size} bytes, its header describes {header.file_bytes})", field=field)
    return header


def header_from_chunks(chunks: Iterable[bytes], source: str, field: str) -> SafetensorsHeader:
    """Read a stream only as far as its header (the rest is never downloaded)."""
    buf = bytearray()
    need: int | None = None
    for chunk in chunks:
        buf.extend(chunk)
        if need is None and len(buf) >= 8:
            need = 8 + _length(bytes(buf[:8]), source, field)
        if need is not None and len(buf) >= need:
            return parse_header(bytes(buf[8:need]), source, field)
    if need is None:
        _length(bytes(buf), source, field)
    raise InvalidInput(f"{source} is truncated (its header is cut short)", field=field)
