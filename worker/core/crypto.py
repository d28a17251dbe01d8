"""Encryption of secrets at rest (channel credentials, access-key secrets).

Fernet (AES-128-CBC + HMAC-SHA256) from ``cryptography``, keyed by ``HERALD_SECRET_KEY``
through HKDF (:meth:`Settings.fernet_key`). What was stored under an older key — the plain
SHA-256 derivation Herald used before, or ``HERALD_PREVIOUS_SECRET_KEY`` — still decrypts
(``MultiFernet`` tries the current key first); everything written is encrypted with the
current key, so secrets move to it as they are updated, or all at once with
:func:`reencrypt_stored` (``herald reencrypt-secrets``).

Every function takes the settings whose keys it uses: a process serving ``create_app(settings)``
encrypts with those, never with whatever the environment would give.
"""

from __future__ import annotations

import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.orm import Session

from worker.core.config import Settings


class SecretDecryptionError(RuntimeError):
    """Stored secrets cannot be read with the configured HERALD_SECRET_KEY."""


@lru_cache(maxsize=4)
def _fernet(current: bytes, *older: bytes) -> MultiFernet:
    return MultiFernet([Fernet(current), *(Fernet(key) for key in older)])


def _cipher(settings: Settings) -> MultiFernet:
    return _fernet(settings.fernet_key(), *settings.legacy_fernet_keys())


def encrypt(plaintext: bytes, settings: Settings) -> bytes:
    return _cipher(settings).encrypt(plaintext)


def decrypt(token: bytes, settings: Settings) -> bytes:
    try:
        return _cipher(settings).decrypt(token)
    except InvalidToken:
        raise SecretDecryptionError(
            "stored secrets do not decrypt with this HERALD_SECRET_KEY (nor with "
            "HERALD_PREVIOUS_SECRET_KEY)"
        ) from None


def reencrypt(token: bytes, settings: Settings) -> bytes:
    """``token`` encrypted with the current key (unchanged if it already is)."""
    try:
        _fernet(settings.fernet_key()).decrypt(token)
        return token
    except InvalidToken:
        pass
    try:
        return _cipher(settings).rotate(token)
    except InvalidToken:
        raise SecretDecryptionError(
            "stored secrets do not decrypt with this HERALD_SECRET_KEY"
        ) from None


def reencrypt_stored(session: Session, settings: Settings) -> int:
    """Every stored secret (channel credentials, access-key secrets) encrypted with the
    current key; how many were re-encrypted. After this, ``HERALD_PREVIOUS_SECRET_KEY`` can go.
    """
    from worker.core.models import AccessKey, Channel

    changed = 0
    for channel in session.scalars(select(Channel).where(Channel.secrets.is_not(None))):
        assert channel.secrets is not None
        rotated = reencrypt(channel.secrets, settings)
        changed += rotated != channel.secrets
        channel.secrets = rotated
    for key in session.scalars(select(AccessKey)):
        rotated = reencrypt(key.secret, settings)
        changed += rotated != key.secret
        key.secret = rotated
    return changed


def encrypt_json(values: dict[str, str], settings: Settings) -> bytes:
    return encrypt(json.dumps(values).encode(), settings)


def decrypt_json(token: bytes, settings: Settings) -> dict[str, str]:
    value = json.loads(decrypt(token, settings))
    assert isinstance(value, dict)
    return value
