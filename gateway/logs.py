"""Structured log lines: one JSON object per line, with the ids, sizes and durations passed as extra."""

from __future__ import annotations

import json
import logging
import sys
import time

__all__ = ["REQUEST_LOG", "RequestLog", "configure_logging"]

REQUEST_LOG = "codeinterp.request_log"  # the ASGI scope key of the request's RequestLog

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(time.time(), 3), "level": record.levelname.lower(), "logger": record.name,
                "event": record.getMessage()}
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class RequestLog:
    """What a request's one log line carries beyond its method, route, status and duration.

    A run engine's call is one request, answered when the call ends: its end goes on that line (call
    id, container, outcome) instead of a second line of its own, which cost as much CPU again.
    """

    __slots__ = ("fields", "open")

    def __init__(self) -> None:
        self.fields: dict[str, object] = {}
        self.open = True  # until the line is written

    def add(self, fields: dict[str, object]) -> bool:
        """Put ``fields`` on the line; False once it is written (log them on a line of their own)."""
        if self.open:
            self.fields.update(fields)
        return self.open


def configure_logging(level: str = "INFO") -> None:
    # What the JSON lines never show, so what no record need look up: the caller's file and line (a
    # walk up the stack), the thread, the process. The switches are the logging HOWTO's "Optimization".
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("codeinterp")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
