"""Structured logs, one stream: JSON lines when not on a terminal, readable lines when on one.

Herald's own events (structlog) and the libraries' stdlib ``logging`` (Celery, kombu, uvicorn,
aioapns, httpx) leave through one handler whose structlog ``ProcessorFormatter`` renders both,
so every line carries ``level``, ``logger`` and ``timestamp`` in the same shape
(https://www.structlog.org/en/stable/standard-library.html).
"""

from __future__ import annotations

import logging
import sys

import structlog

# Libraries whose INFO lines say nothing Herald's own events don't, or say too much.
QUIET_LOGGERS = {
    # One line per HTTP request, the URL included: ADM puts the device's registration id in
    # the path, and each provider call is already a ``delivery attempt`` event.
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "hpack": logging.WARNING,  # h2's header codec logs every header at DEBUG
    "alembic.runtime.plugins": logging.WARNING,  # a line per autogenerate plugin loaded
}


def configure_logging(level: str = "INFO") -> None:
    """Send structlog events and stdlib records to stderr at ``level`` (HERALD_LOG_LEVEL).
    Safe to call again: the root handler is replaced, not added to."""
    threshold = logging.getLevelName(level.upper())
    if not isinstance(threshold, int):
        threshold = logging.INFO
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    rendering: list[structlog.typing.Processor] = (
        [structlog.dev.ConsoleRenderer()]
        if sys.stderr.isatty()
        # A traceback becomes the event's ``exception`` member: still one line.
        else [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    ))
    root = logging.getLogger()
    for old in root.handlers:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    # Records of loggers that do not propagate and have no handler (billiard's
    # "multiprocessing": "Process 'ForkPoolWorker-1' exited with signal 15") end here, not in
    # logging's bare-text last resort.
    logging.lastResort = handler
    for name, floor in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(threshold, floor))
    logging.captureWarnings(True)  # warnings.warn (Celery's, for one) as records, not text
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
