"""structlog set-up, done once per process by its composition root.

JSON lines when stderr is not a terminal, coloured console output when it is. Standard-library
loggers (uvicorn, aio_pika, sqlalchemy) are routed through the same processors, so every line of
a process has one shape. Context ids (issue, language, delivery, message) are bound with
``structlog.contextvars.bound_contextvars`` around each request and message.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

from shared.addresses import mask_email

_SENSITIVE_KEYS = ("token", "password", "secret", "authorization", "cookie", "url")


_ADDRESS_KEYS = frozenset({"email", "address", "to", "recipient"})
# What each field name needs: "redact", "mask" or "" (a process logs a few dozen names, and
# deciding per event was a third of the cost of a log call).
_treatment: dict[str, str] = {}


def _treatment_of(key: str) -> str:
    found = _treatment.get(key)
    if found is None:
        lowered = key.lower()
        if key != "event" and any(word in lowered for word in _SENSITIVE_KEYS):
            found = "redact"
        else:
            found = "mask" if lowered in _ADDRESS_KEYS else ""
        if len(_treatment) < 4096:  # field names are code, but stay bounded anyway
            _treatment[key] = found
    return found


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: never let a token or a signed link reach the log."""
    for key in list(event_dict):
        treatment = _treatment_of(key)
        if treatment == "redact":
            event_dict[key] = "[redacted]"
        elif treatment == "mask" and isinstance(event_dict[key], str):
            event_dict[key] = mask_email(event_dict[key])
    return event_dict


def configure_logging(
    *,
    service: str,
    level: str = "INFO",
    fmt: Literal["auto", "json", "console"] = "auto",
) -> None:
    """Configure structlog and the stdlib root logger for this process."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            # An event under the level is dropped before the others run (they ran for every
            # debug and info line of a WARNING process before, to be thrown away after).
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "aio_pika", "aiormq"):
        stdlib_logger = logging.getLogger(name)
        stdlib_logger.handlers[:] = []
        stdlib_logger.propagate = True
    # Chatty libraries stay at WARNING unless asked otherwise.
    for name in ("aio_pika", "aiormq", "sqlalchemy.engine", "mail.log", "asyncio"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
