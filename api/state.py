"""Per-process state of the API: settings, sessions, key store, caches, enqueue, limiter."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from api.ratelimit import RateLimiter
from worker.core.config import Settings
from worker.delivery.notify import Waiters
from worker.management.access_keys import KeyStore
from worker.management.channels import ChannelCache


@dataclass
class Herald:
    """Per-process state shared by the routes."""

    settings: Settings
    sessions: sessionmaker[Session]
    keys: KeyStore
    channel_cache: ChannelCache
    waiters: Waiters
    enqueue: Callable[[str, list[int]], None]
    limiter: RateLimiter

    def transaction(self) -> contextlib.AbstractContextManager[Session]:
        return _transaction(self.sessions)


@contextlib.contextmanager
def _transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    with sessions() as session, session.begin():
        yield session
