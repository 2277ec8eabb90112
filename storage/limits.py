"""What every backend stores alike: text lengths and characters, checked before anything is written.

SQLite stores a 300-character name or a NUL that PostgreSQL refuses, and neither stores a lone surrogate (half
a UTF-16 pair, which Python strings may hold: json.loads makes one of "\\ud800"). Storage checks every text
it is given here, so a document is refused or kept the same way on each backend; the workflow boundary
(pipelines.workflow) uses the same limits, so a workflow is refused with an issue long before it gets here.
"""

from __future__ import annotations

from storage.errors import StorageError

MAX_NAME = 255  # names, tags, titles, node ids, targets: what every String(255) column holds
MAX_TEXT = 100_000  # descriptions and save messages
MAX_DEVICE = 64
NUL_REFUSED = "contains a NUL character, which no database stores alike"
SURROGATE_REFUSED = "contains a lone surrogate (half of a UTF-16 pair), which is not text any database stores"


class InvalidValue(StorageError, ValueError):
    """A value storage does not keep on every backend; the message names the field and why."""


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text on every backend, whatever its length, or None."""
    if "\0" in value:
        return NUL_REFUSED
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE_REFUSED
    return None


def checked_text(field: str, value: str, limit: int | None) -> str:
    """`value`, or InvalidValue naming `field` when it is over `limit` characters or not storable text."""
    if limit is not None and len(value) > limit:
        raise InvalidValue(f"{field} is {len(value):,} characters; at most {limit:,} are stored")
    problem = text_problem(value)
    if problem is not None:
        raise InvalidValue(f"{field} {problem}")
    return value
