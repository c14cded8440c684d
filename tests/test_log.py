"""Logging: text or one JSON object per line, tracebacks kept, handlers never piled up."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from maxwell import log


@pytest.fixture
def restore_maxwell_logger() -> Iterator[None]:
    root = logging.getLogger("maxwell")
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_maxwell_logger")
def test_json_lines_carry_extras_and_the_traceback() -> None:
    stream = io.StringIO()
    log.configure("info", "json", stream)
    logger = logging.getLogger("maxwell.node.daemon")
    logger.debug("not shown at info")
    try:
        raise RuntimeError("the meter broke")
    except RuntimeError:
        logger.exception("tick %d failed", 7, extra={"agent": "a1"})
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "error" and record["logger"] == "maxwell.node.daemon"
    assert record["message"] == "tick 7 failed" and record["agent"] == "a1"
    assert "RuntimeError: the meter broke" in record["traceback"]
    assert record["time"].endswith("+00:00")


@pytest.mark.usefixtures("restore_maxwell_logger")
def test_text_format_and_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    log.configure("warning", "text", first)
    log.configure("debug", "text", second)
    logging.getLogger("maxwell.x").debug("hello %s", "there")
    assert first.getvalue() == ""
    assert "DEBUG maxwell.x: hello there" in second.getvalue()
    ours = [h for h in logging.getLogger("maxwell").handlers if getattr(h, "_maxwell", False)]
    assert len(ours) == 1


def test_bad_level_or_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log level"):
        log.configure("loud")
    with pytest.raises(ValueError, match="log format"):
        log.configure("info", "xml")


def test_logged_keeps_an_expected_failure_visible(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("maxwell.test")
    with caplog.at_level(logging.DEBUG, logger="maxwell"):
        with log.logged(logger, "agent a1: no CPU quota", KeyError):
            raise KeyError("cpu")
        with log.logged(logger, "never", KeyError):
            pass
    [record] = [r for r in caplog.records if r.name == "maxwell.test"]
    assert record.getMessage() == "agent a1: no CPU quota" and record.exc_info is not None
    with pytest.raises(ValueError), log.logged(logger, "only KeyError", KeyError):
        raise ValueError("not swallowed")
