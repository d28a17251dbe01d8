"""Access keys: an id and secret a client signs with (SigV4), optionally scoped to apps.

The root key comes from configuration and may use every app; others live in the database,
their secrets encrypted at rest (SigV4 needs the secret itself, so it cannot be hashed).
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from worker.core import crypto
from worker.core.config import Settings
from worker.core.db import utcnow
from worker.core.errors import NotFound
from worker.core.models import AccessKey

_ID_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Principal:
    key_id: str
    secret: str
    app_ids: frozenset[str] | None  # None: every app

    def may_use(self, app_id: str) -> bool:
        return self.app_ids is None or app_id in self.app_ids


def create_key(
    session: Session,
    settings: Settings,
    app_ids: list[str] | None = None,
    description: str | None = None,
) -> tuple[str, str]:
    key_id = "HK" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(18))
    secret = secrets.token_urlsafe(30)
    session.add(AccessKey(
        id=key_id, secret=crypto.encrypt(secret.encode(), settings), app_ids=app_ids or None,
        description=description, created_at=utcnow(), revoked_at=None,
    ))
    session.flush()
    return key_id, secret


def list_keys(session: Session) -> list[AccessKey]:
    return list(session.scalars(select(AccessKey).order_by(AccessKey.created_at)))


def revoke_key(session: Session, key_id: str) -> AccessKey:
    key = session.get(AccessKey, key_id)
    if key is None:
        raise NotFound(f"No access key {key_id}")
    key.revoked_at = key.revoked_at or utcnow()
    return key


class KeyStore:
    """Looks keys up for every signed request; a short cache keeps revocation prompt."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], ttl_s: float = 5.0):
        self._settings = settings  # whose keys decrypt the stored secrets
        self._root: Principal | None = None
        if settings.root_access_key_id and settings.root_secret_access_key:
            self._root = Principal(
                settings.root_access_key_id, settings.root_secret_access_key, None
            )
        self._sessions = sessions
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def principal(self, key_id: str) -> Principal | None:
        # Bytes: compare_digest raises TypeError on non-ASCII str, and key ids come from
        # a client's header.
        if self._root is not None and secrets.compare_digest(
            key_id.encode(), self._root.key_id.encode()
        ):
            return self._root
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
        if cached and cached[0] > now:
            return cached[1]
        found: Principal | None = None
        with self._sessions() as session:
            key = session.get(AccessKey, key_id)
            if key is not None and key.revoked_at is None:
                found = Principal(
                    key.id,
                    crypto.decrypt(key.secret, self._settings).decode(),
                    frozenset(key.app_ids) if key.app_ids else None,
                )
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = (now + self._ttl, found)
        return found
