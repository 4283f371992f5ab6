"""The one base class of problems a user can fix (a missing file, model, cache or package)."""

from __future__ import annotations


class UserFacingError(Exception):
    """Its message names the place and says what to do; the CLI prints it as `error: ...`, never a traceback."""

    # Raised alike by every process of a launch (from the same recipe, files or agreed decision), so the first
    # process alone says it: torchrun's N processes printed every such line N times.
    alike_in_every_process = False


def some_of(names: list[str], limit: int) -> str:
    """The first `limit` names and how many more: a message stays one line for a folder of thousands of files."""
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" and {more} more" if more > 0 else "")
