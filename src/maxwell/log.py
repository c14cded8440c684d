"""Maxwell's logging: the standard `logging` module, under the `maxwell` logger.

Every module logs through `logging.getLogger(__name__)`; nothing here is needed to log, only to
choose where it goes. `configure` sends the `maxwell` tree to a stream (stderr: journald reads it
under systemd) as text or as one JSON object per line (for journald's structured fields, Loki,
`jq`). A record's `exc_info` is kept: in text as the usual traceback, in JSON as `traceback`.
Fields passed through `extra=` (e.g. `agent`, `tick`) appear in JSON as keys of their own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
ROOT = "maxwell"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord has: whatever else a record carries came in through `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send the `maxwell` loggers at `level` and above to `stream` (stderr), as `fmt`.

    Called again, it replaces the handler it installed before (never piles them up)."""
    if level not in LEVELS:
        raise ValueError(f"log level {level!r}: use one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: use one of {', '.join(FORMATS)}")
    root = logging.getLogger(ROOT)
    for handler in [h for h in root.handlers if getattr(h, "_maxwell", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT))
    handler._maxwell = True  # type: ignore[attr-defined]  # marks the handler as ours
    root.addHandler(handler)
    root.setLevel(level.upper())


@contextlib.contextmanager
def logged(
    logger: logging.Logger, what: str, *errors: type[BaseException], level: int = logging.DEBUG
) -> Iterator[None]:
    """Like `contextlib.suppress(*errors)`, but the failure is logged (with its traceback) at
    `level`, as `what`: a failure that is expected (a limit a degraded cgroup cannot hold, a
    clean-up after another failure) is still seen."""
    try:
        yield
    except errors:
        logger.log(level, "%s", what, exc_info=True)
