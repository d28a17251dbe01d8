"""Outages of what a process depends on: one log line when it is lost, one when it is back.

Every Herald process keeps going through a database, broker or Redis outage (DESIGN.md §8):
the code that notices one reports it here and carries on. Reporting the same outage again is
free, so callers report every failure and every success without keeping state of their own,
and an operator reads exactly two lines per outage — what went away and why, and how long it
was gone.
"""

from __future__ import annotations

import threading
import time

import redis
import structlog
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = structlog.get_logger("herald.outages")


class Dependency:
    """The reachability of one dependency, as seen by this process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._down_since: float | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def lost(self, error: BaseException | str) -> None:
        with self._lock:
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        log.warning("dependency unreachable", dependency=self.name, error=_describe(error))

    def back(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            down_s = time.monotonic() - self._down_since
            self._down_since = None
        log.warning("dependency reachable again", dependency=self.name,
                    down_s=round(down_s, 1))


def _describe(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    # The first line names the failure (driver messages run on with hints and SQL).
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database could not be reached (rather than a bad query)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def broker_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` from publishing a task means the broker could not be reached."""
    return isinstance(exc, KombuOperationalError | redis.ConnectionError | OSError)


DATABASE = Dependency("database")
BROKER = Dependency("broker")
REDIS = Dependency("redis")
