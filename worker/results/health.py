"""Readiness: can this process reach what it needs (``/readyz``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache

import redis
from kombu.connection import Connection as BrokerConnection
from sqlalchemy.orm import Session, sessionmaker

from worker.core.config import Settings
from worker.core.db import ping
from worker.core.outages import BROKER, DATABASE, REDIS, Dependency
from worker.delivery.runtime import wakeup_url


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    # One client (and its connection pool) per URL: a probe every few seconds must not open
    # a new TCP connection each time.
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


_broker_lock = threading.Lock()


@lru_cache(maxsize=4)
def _broker(url: str) -> BrokerConnection:
    return BrokerConnection(url, connect_timeout=2)  # type: ignore[no-untyped-call]


def _ping_broker(url: str) -> None:
    if url.startswith(("redis://", "rediss://")):
        _redis(url).ping()
        return
    # AMQP: one connection kept open and re-opened when the broker dropped it; a probe
    # every few seconds must not cost a handshake each time. Probes run on a thread pool and
    # an AMQP connection is not thread-safe.
    with _broker_lock:
        _check_amqp(_broker(url))


def _check_amqp(connection: BrokerConnection) -> None:
    if connection.connected:
        try:
            connection.heartbeat_check()  # type: ignore[no-untyped-call]
            connection.drain_events(timeout=0)  # type: ignore[no-untyped-call]
            return
        except TimeoutError:
            return  # nothing to read: the connection is alive
        except Exception:
            connection.close()  # type: ignore[no-untyped-call]
    connection.ensure_connection(max_retries=1, timeout=2)  # type: ignore[no-untyped-call]


def problems(settings: Settings, sessions: sessionmaker[Session]) -> dict[str, str]:
    """What is unreachable, by name ("database", "broker", "redis"); empty when ready."""
    found: dict[str, str] = {}
    _probe(found, DATABASE, lambda: ping(sessions))
    url = wakeup_url(settings)
    if url:
        _probe(found, REDIS, lambda: _redis(url).ping())
    if settings.broker_url and settings.broker_url != url:
        _probe(found, BROKER, lambda: _ping_broker(settings.broker_url or ""))
    elif settings.broker_url and "redis" in found:
        found["broker"] = found["redis"]
    return found


def _probe(found: dict[str, str], dependency: Dependency, check: Callable[[], object]) -> None:
    """Run one check; the outcome also feeds the process's outage log (worker.core.outages)."""
    try:
        check()
    except Exception as exc:
        found[dependency.name] = type(exc).__name__
        dependency.lost(exc)
        return
    dependency.back()
