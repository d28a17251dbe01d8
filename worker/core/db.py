"""Engine and sessions. One engine per process, created from the settings."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from worker.core.config import Settings


def utcnow() -> datetime:
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets the API read while the in-process worker writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


@lru_cache(maxsize=4)
def _sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(make_engine(url), expire_on_commit=False)


def session_factory(settings: Settings) -> sessionmaker[Session]:
    prepare_embedded_database(settings)
    return _sessionmaker(settings.sqlalchemy_url)


def prepare_embedded_database(settings: Settings) -> None:
    """The embedded default's SQLite file (none with HERALD_DATABASE_URL), before anything
    opens it: it holds every endpoint and result, so it is readable by its owner only.

    SQLite gives the ``-wal`` and ``-shm`` files it creates the database file's mode, so
    creating that file 0600 is enough for new ones; files left by older versions are fixed.
    """
    if settings.database_url:
        return
    path = settings.data_dir / "herald.db"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            file.chmod(0o600)


@contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error."""
    with session_factory(settings)() as session, session.begin():
        yield session


def ping(sessions: sessionmaker[Session]) -> None:
    """Raise unless the database answers a query."""
    with sessions() as session:
        session.execute(text("SELECT 1"))
