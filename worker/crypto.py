"""Encryption of secrets at rest (channel credentials, access-key secrets).

Fernet (AES-128-CBC + HMAC-SHA256) from ``cryptography``, keyed by ``HERALD_SECRET_KEY``.
"""

from __future__ import annotations

import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken

from worker.config import Settings, get_settings


class SecretDecryptionError(RuntimeError):
    """Stored secrets cannot be read with the configured HERALD_SECRET_KEY."""


@lru_cache(maxsize=4)
def _fernet(key: bytes) -> Fernet:
    return Fernet(key)


def _cipher(settings: Settings | None) -> Fernet:
    return _fernet((settings or get_settings()).fernet_key())


def encrypt(plaintext: bytes, settings: Settings | None = None) -> bytes:
    return _cipher(settings).encrypt(plaintext)


def decrypt(token: bytes, settings: Settings | None = None) -> bytes:
    try:
        return _cipher(settings).decrypt(token)
    except InvalidToken:
        raise SecretDecryptionError(
            "stored secrets do not decrypt with this HERALD_SECRET_KEY"
        ) from None


def encrypt_json(values: dict[str, str], settings: Settings | None = None) -> bytes:
    return encrypt(json.dumps(values).encode(), settings)


def decrypt_json(token: bytes, settings: Settings | None = None) -> dict[str, str]:
    value = json.loads(decrypt(token, settings))
    assert isinstance(value, dict)
    return value
