"""Readiness: can this process reach what it needs (``/readyz``)."""

from __future__ import annotations

from functools import lru_cache

import redis
from sqlalchemy.orm import Session, sessionmaker

from worker.config import Settings
from worker.db import ping
from worker.runtime import wakeup_url


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    # One client (and its connection pool) per URL: a probe every few seconds must not open
    # a new TCP connection each time.
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def problems(settings: Settings, sessions: sessionmaker[Session]) -> dict[str, str]:
    """What is unreachable, by name; empty when ready."""
    found: dict[str, str] = {}
    try:
        ping(sessions)
    except Exception as exc:
        found["database"] = type(exc).__name__
    url = wakeup_url(settings)
    if url:
        try:
            _redis(url).ping()
        except redis.RedisError as exc:
            found["redis"] = type(exc).__name__
    return found
