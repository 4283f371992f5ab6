"""The one base class of problems a user can fix (a missing file, model, cache or package)."""

from __future__ import annotations


class UserFacingError(Exception):
    """Its message names the place and says what to do; the CLI prints it as `error: ...`, never a traceback."""
