"""Structured logging: one JSON object a line (or readable text for a terminal).

Log calls pass facts as ``extra={...}``; they never carry media bytes, only ids and sizes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


@dataclass
class _Window:
    start: float
    count: int = 1
    held: int = 0


class RepeatLimit(logging.Filter):
    """At most ``burst`` records of one kind (logger and message template) per ``window_s``;
    the next one let through says how many were held back. A broker that is down makes the
    client library log every reconnect attempt: tens of thousands of lines a minute that
    bury everything else and fill disks. Three a kind per ten seconds: the client repeats five
    kinds of line while the broker is away, so an outage logs ~1.5 lines a second."""

    def __init__(self, burst: int = 3, window_s: float = 10.0, max_kinds: int = 1024) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self.max_kinds = max_kinds  # bounds the memory the filter keeps
        self._windows: dict[tuple[str, str], _Window] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, str(record.msg))
        window = self._windows.get(kind)
        if window is None or record.created - window.start >= self.window_s:
            if window is None and len(self._windows) >= self.max_kinds:
                self._windows.clear()
            if window is not None and window.held:
                record.suppressed = window.held
            self._windows[kind] = _Window(record.created)
            return True
        if window.count < self.burst:
            window.count += 1
            return True
        window.held += 1
        return False


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        tail = " ".join(f"{k}={v}" for k, v in extras.items())
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()} {tail}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line.rstrip()


def logging_config(fmt: str, level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict (Faust's worker takes one too)."""
    formatter = "modstream.logs.JsonFormatter" if fmt == "json" else "modstream.logs.TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "filters": {"repeats": {"()": "modstream.logs.RepeatLimit"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["repeats"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            "aiokafka": {"level": "WARNING"},
            "faust": {"level": "WARNING"},
            "mode": {"level": "WARNING"},
        },
    }
