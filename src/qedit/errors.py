"""One error type for everything a user can get wrong.

Every boundary (CLI, HTTP API, Python API) catches ``QeditError`` and shows ``str(err)``: a single
line naming the field, the limit and the value, so no user ever sees a traceback for bad input.
"""

from __future__ import annotations


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
