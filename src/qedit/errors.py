"""One error type for everything a user can get wrong.

Every boundary (CLI, HTTP API, Python API) catches ``QeditError`` and shows ``str(err)``: a single
line naming the field, the limit and the value, so no user ever sees a traceback for bad input.
"""

from __future__ import annotations

QUOTE_LIMIT = 80
"""Characters of user text (a prompt, a path, a value) an error message quotes; the rest is counted, not shown."""

LINE_LIMIT = 600
"""The longest error line a boundary prints: a message built from outside text is cut to it."""


def quote(value: object, limit: int = QUOTE_LIMIT, *, bare: bool = False) -> str:
    """User text as an error quotes it: ``'abc'`` whole when short, else its first ``limit`` characters,
    an ellipsis and the length (``'aaaa...' (25000 characters)``), on one line.

    A 25,000-character prompt, a pasted base64 image or a runaway path would otherwise be echoed in
    full into a terminal, a log line or a JSON error body. Strings are quoted with ``repr`` (so
    newlines and control characters show as escapes) unless ``bare``, for paths and names printed as
    they are; other values by their ``repr``.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return value if bare and value.isprintable() else repr(value)
        head = value[:limit] + "..."
        shown = head if bare and head.isprintable() else repr(head)
        return f"{shown} ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def one_line(message: str, limit: int = LINE_LIMIT) -> str:
    """``message`` as one line of at most about ``limit`` characters (line breaks become spaces)."""
    line = " ".join(message.split()) if ("\n" in message or "\r" in message) else message
    if len(line) <= limit:
        return line
    return f"{line[:limit]}... ({len(line)} characters)"


class QeditError(Exception):
    """A problem the user can fix. ``field`` names the input at fault (``image[1]``, ``steps``)."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 400) -> None:
        self.message = message
        self.field = field
        self.status = status
        super().__init__(f"{field}: {message}" if field else message)


class InvalidInput(QeditError):
    """The request itself is wrong (HTTP 400/422, exit code 2)."""


class ModelLoadError(QeditError):
    """A model snapshot is missing or broken; the message names the file."""

    def __init__(self, message: str, *, field: str | None = "model") -> None:
        super().__init__(message, field=field, status=500)


class EditCancelled(Exception):
    """Raised between denoising steps when the caller's cancel token is set."""
