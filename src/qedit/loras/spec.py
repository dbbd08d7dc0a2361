"""A LoRA as a request names it: a source and a scale (WaveSpeed's ``{path, scale}``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from qedit.errors import InvalidInput

MAX_LORAS = 3
SCALE_MIN, SCALE_MAX = -4.0, 4.0
MAX_SOURCE_CHARS = 2048


class LoraSpec(BaseModel):
    """One adapter of an edit. ``path`` is a local file or folder (for the service: a name in its LoRA
    folder), a hub repo id (``owner/repo`` or ``owner/repo/file.safetensors``) or an https URL."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(
        min_length=1,
        max_length=MAX_SOURCE_CHARS,
        description="local .safetensors file or folder, hub repo id (owner/repo[/file.safetensors]) or https URL",
    )
    scale: float = Field(default=1.0, ge=SCALE_MIN, le=SCALE_MAX, description="adapter weight, -4 to 4")

    @classmethod
    def parse(cls, text: str, field: str = "lora") -> LoraSpec:
        """``SOURCE[:SCALE]`` as the CLI's ``--lora`` takes it (a URL's own colons are left alone)."""
        from qedit.params import validate

        source, sep, tail = text.rpartition(":")
        if sep and source and _is_number(tail):
            return validate(cls, {"path": source, "scale": float(tail)}, field)
        if not text.strip():
            raise InvalidInput("expected FILE[:SCALE], got an empty value", field=field)
        return validate(cls, {"path": text}, field)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip() not in ("", "nan", "inf", "-inf", "+inf", "infinity")
