"""User-facing errors.

Anything the user can fix (a recipe typo, a missing file or column, an unknown label, a corrupt
image, a missing token) is raised as an :class:`SftHubError`. The CLI prints it as one message and
exits with code 2, without a traceback (unless ``--debug``).
"""
from __future__ import annotations


class SftHubError(Exception):
    """An error caused by user input, reported as ``<file>: <field>: <message> (fix: <hint>)``."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.field = field
        self.hint = hint

    def __str__(self) -> str:
        where = ": ".join(str(p) for p in (self.file, self.field) if p)
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


class RecipeError(SftHubError):
    """The recipe itself is wrong: YAML, schema, composition, overrides."""


class DataError(SftHubError):
    """The data the recipe points to is missing, malformed or inconsistent."""


class RunDirError(SftHubError):
    """The run directory is in a state that would lose work (exists, incomplete, ...)."""


class HubError(SftHubError):
    """Talking to the Hugging Face Hub failed (token, permissions, network)."""


class attributed_to:
    """Context manager: a user error raised inside without a file gets ``source`` as its file."""

    def __init__(self, source: str):
        self.source = source

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if isinstance(exc, SftHubError) and exc.file is None:
            exc.file = self.source
        return False
