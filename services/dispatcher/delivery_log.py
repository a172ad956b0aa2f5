"""The one canonical log line per delivery, made cheap.

Every delivery outcome is logged once (``email_sent``, ``email_deferred``, ...). Through structlog
and the standard-library formatter that line costs tens of microseconds of processors per
message; when the process logs JSON lines (as configured by ``shared.logging`` for services), the
line is built here directly in the same shape (``event``, ``level``, ``logger``, ``timestamp``,
the context bound when the process started such as ``service``, then the fields, the address
masked) and written to the
same stream under the handler's lock. Otherwise (a console, tests capturing structlog events)
it goes through structlog as usual. Nothing is built when INFO is off.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

from shared.addresses import mask_email


def _json_handler(root: logging.Logger) -> logging.StreamHandler[TextIO] | None:
    """The root handler, if it is one stream rendering structlog events as JSON."""
    if len(root.handlers) != 1:
        return None
    handler = root.handlers[0]
    formatter = handler.formatter
    if not isinstance(handler, logging.StreamHandler) or not isinstance(
        formatter, structlog.stdlib.ProcessorFormatter
    ):
        return None
    if not any(isinstance(p, structlog.processors.JSONRenderer) for p in formatter.processors):
        return None
    return handler


_ENCODE_STR = json.encoder.encode_basestring  # the C encoder of json.dumps(ensure_ascii=False)
_OWN_KEYS = frozenset({"event", "level", "logger", "timestamp", "to"})


def _value(value: Any) -> str:
    """One value as ``json.dumps(..., ensure_ascii=False, default=str)`` writes it."""
    if isinstance(value, str):
        return _ENCODE_STR(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)


class DeliveryLog:
    """Writes the canonical line of each delivery for the logger ``name``."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._stdlib = logging.getLogger(name)
        self._log = structlog.get_logger(name)
        self._handler = _json_handler(logging.getLogger())
        # Bound once per process (``service``); per-message ids are passed as fields.
        self._context = structlog.contextvars.get_contextvars()
        # What follows the event in every line, and the context after the timestamp, as JSON
        # once: a line is then a few string joins (the same text json.dumps makes).
        self._after_event = ', "level": "info", "logger": ' + _ENCODE_STR(name)
        self._after_timestamp = "".join(
            f", {_ENCODE_STR(key)}: {_value(value)}" for key, value in self._context.items()
        )
        self._joinable = self._context.keys().isdisjoint(_OWN_KEYS)

    def line(self, event: str, *, to: str, **fields: Any) -> str:
        """The JSON line (with its newline) of one outcome: what ``json.dumps`` writes for
        ``{event, level, logger, timestamp, **context, to (masked), **fields}``."""
        timestamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        if not (self._joinable and self._context.keys().isdisjoint(fields)):
            # A key given twice: the dict decides which value stays where.
            line: dict[str, Any] = {
                "event": event,
                "level": "info",
                "logger": self._name,
                "timestamp": timestamp,
                **self._context,
                "to": mask_email(to),
            }
            line.update(fields)
            return json.dumps(line, ensure_ascii=False, default=str) + "\n"
        parts = [
            '{"event": ',
            _ENCODE_STR(event),
            self._after_event,
            ', "timestamp": ',
            _ENCODE_STR(timestamp),
            self._after_timestamp,
            ', "to": ',
            _ENCODE_STR(mask_email(to)),
        ]
        for key, value in fields.items():
            parts += (", ", _ENCODE_STR(key), ": ", _value(value))
        parts.append("}\n")
        return "".join(parts)

    def outcome(self, event: str, *, to: str, **fields: Any) -> None:
        enabled = self._stdlib.isEnabledFor(logging.INFO)
        handler = self._handler
        if handler is None:
            # structlog decides (tests capture its events); only the frequent line is skipped
            # here when INFO is off, before structlog builds it.
            if enabled or event != "email_sent":
                self._log.info(event, to=mask_email(to), **fields)
            return
        if not enabled:
            return
        text = self.line(event, to=to, **fields)
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.flush()
        except (OSError, ValueError):
            handler.handleError(logging.makeLogRecord({"msg": event}))
        finally:
            handler.release()
