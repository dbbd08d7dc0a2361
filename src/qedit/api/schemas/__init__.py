"""One module per interface: its request/response shapes and their mapping onto ``EditParams``."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator

from qedit.errors import InvalidInput
from qedit.params import parse_size


def _checked_size(v: str | None) -> str | None:
    if v is not None and v != "auto":
        try:
            parse_size(v)
        except InvalidInput as e:
            raise ValueError(e.message) from None
    return v


SizeText = Annotated[str, AfterValidator(_checked_size)]
"""An output size as the interface spells it ("W*H", "WxH", or "auto" where allowed), checked by
the same rules as ``EditParams.size`` and kept as text so that responses can echo it."""


def size_or_none(text: str | None) -> tuple[int, int] | None:
    """The parsed size, or ``None`` for "use the input's size" (absent or "auto")."""
    return None if text is None or text == "auto" else parse_size(text)
