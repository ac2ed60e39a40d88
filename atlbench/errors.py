"""User-facing errors: one clear line, no traceback, a distinct exit code."""

from __future__ import annotations

__all__ = ["AtlbenchError", "DataError", "HubUnavailableError", "SourceError", "SuiteError"]


class AtlbenchError(Exception):
    """A problem the user can fix (bad suite, unknown model, unreadable data).

    The CLI prints ``str(error)`` as a single line and exits with code 2.
    """

    exit_code = 2


class SuiteError(AtlbenchError):
    """The suite file is malformed; the message names file, field path and fix."""


class DataError(AtlbenchError):
    """A target's data cannot be used as given (labels, columns, corrupt files)."""


class SourceError(AtlbenchError):
    """A source model cannot be built or loaded (unknown name, offline hub, bad checkpoint)."""


class HubUnavailableError(SourceError):
    """The Hugging Face / timm hub is not reachable; the message says how to go local."""
