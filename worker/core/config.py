"""Herald's configuration: the ``HERALD_*`` environment variables of DESIGN.md §2.

Everything is read once into a frozen :class:`Settings`; a bad value stops the process at
start-up with a message naming the variable (see :func:`load_settings`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PINPOINT_DEFAULT_RPS = 6000.0
MIN_RESULT_RETENTION_S = 3600
MIN_SECRET_LENGTH = 32
KEYGEN_COMMAND = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
# Values that appear in examples and documentation: never a deployment's real secret.
_PLACEHOLDERS = ("changeme", "replaceme", "example", "secret", "password", "xxxxxxxx")


def _is_placeholder(value: str) -> bool:
    folded = value.lower().replace("-", "").replace("_", "")
    return any(word in folded for word in _PLACEHOLDERS)


def check_secret(value: str) -> None:
    """Refuse a secret an attacker could guess: short, a placeholder, or one repeated
    character. Raises ValueError saying how to make a good one."""
    if len(value) < MIN_SECRET_LENGTH or len(set(value)) < 8 or _is_placeholder(value):
        raise ValueError(
            f"is too short or an example value (at least {MIN_SECRET_LENGTH} random "
            f"characters); generate one with: {KEYGEN_COMMAND}"
        )


class ConfigError(RuntimeError):
    """A ``HERALD_*`` variable has a value Herald cannot run with."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_", frozen=True, extra="ignore")

    database_url: str | None = None
    broker_url: str | None = None
    redis_url: str | None = None

    root_access_key_id: str | None = None
    root_secret_access_key: str | None = None
    secret_key: str | None = None

    sync_timeout_s: float = Field(default=10.0, gt=0, le=300)
    rate_limit_rps: float = Field(default=PINPOINT_DEFAULT_RPS, gt=0)
    rate_limit_burst: int | None = Field(default=None, gt=0)
    max_inflight_sends_per_app: int = Field(default=20_000, gt=0)

    apns_url: str = "https://api.push.apple.com"
    apns_sandbox_url: str = "https://api.sandbox.push.apple.com"
    fcm_url: str = "https://fcm.googleapis.com"
    adm_url: str = "https://api.amazon.com"
    baidu_url: str = "https://api.tuisong.baidu.com"
    smtp_url: str | None = None
    twilio_url: str = "https://api.twilio.com"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    default_origination_number: str | None = None
    sms_transport: Literal["twilio", "smpp"] = "twilio"
    smpp_url: str | None = None
    ca_bundle: Path | None = None

    # Retry policy (DESIGN.md §4): exponential backoff with full jitter.
    retry_max_attempts: int = Field(default=5, ge=1, le=50)
    retry_max_age_s: float = Field(default=3600.0, gt=0)
    retry_base_delay_s: float = Field(default=0.5, gt=0)
    retry_max_delay_s: float = Field(default=300.0, gt=0)
    provider_timeout_s: float = Field(default=10.0, gt=0)

    # Work distribution and crash recovery.
    batch_size: int = Field(default=100, ge=1, le=1000)
    lease_s: float = Field(default=60.0, gt=0)
    recovery_grace_s: float = Field(default=30.0, gt=0)
    sweep_interval_s: float = Field(default=5.0, gt=0)
    region: str = "us-east-1"

    # Where the embedded default keeps its SQLite file and generated secret key.
    data_dir: Path = Path(".herald")
    log_level: str = "INFO"

    # Operations: /metrics unsigned (false: SigV4 like the API); fleet-wide numbers' cache.
    metrics_open: bool = True
    metrics_cache_s: float = Field(default=5.0, ge=0, le=300)

    # issue 13: retention
    # Final results (deliveries, their attempts, requests with nothing left) older than this
    # are deleted by the workers every retention_interval_s; 0 keeps them forever.
    result_retention_s: int = Field(default=2_592_000, ge=0)
    retention_interval_s: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("result_retention_s")
    @classmethod
    def _retention(cls, value: int) -> int:
        # A client may still read a result through the results extension after its send;
        # a floor of an hour stops a slip of units (30 for 30 days) from deleting those.
        if 0 < value < MIN_RESULT_RETENTION_S:
            raise ValueError(f"must be 0 (keep forever) or at least {MIN_RESULT_RETENTION_S} "
                             "seconds")
        return value

    # issue 14: security
    # Where FCM access tokens come from; a tenant's ServiceJson never picks the URL.
    fcm_token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
    # A secret key set before issue 14, kept only to read what it encrypted (see crypto.py).
    previous_secret_key: str | None = None
    # The base URL browsers and providers reach Herald at; an https one makes the dashboard
    # cookie Secure even when TLS ends at a proxy on another host.
    public_url: str | None = None
    # Let FromAddress, OriginationNumber and SenderId be anything (one tenant per Herald).
    allow_any_sender: bool = False
    # What `herald api` gives one client: seconds to send a request head, then its body; idle
    # keep-alive seconds; connections at once per process.
    head_timeout_s: float = Field(default=10.0, gt=0, le=600)
    body_timeout_s: float = Field(default=30.0, gt=0, le=600)
    keep_alive_s: float = Field(default=5.0, gt=0, le=600)
    max_connections: int = Field(default=1000, ge=1)

    @field_validator("secret_key", "root_secret_access_key")
    @classmethod
    def _strong_secret(cls, value: str | None) -> str | None:
        if value is not None:
            check_secret(value)
        return value

    @field_validator("root_access_key_id")
    @classmethod
    def _real_key_id(cls, value: str | None) -> str | None:
        if value is not None and _is_placeholder(value):
            raise ValueError(
                "is the example value from deploy/; create a real key pair with "
                "`herald keys create` (or any id with a secret from " + KEYGEN_COMMAND + ")"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        return value.rstrip("/")

    @field_validator(
        "apns_url", "apns_sandbox_url", "fcm_url", "adm_url", "baidu_url", "twilio_url",
        "fcm_token_url",
    )
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL with a host")
        return value.rstrip("/")

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
                raise ValueError("must look like smtp://user:pass@host:port or smtps://…")
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        return value

    @field_validator("smpp_url")
    @classmethod
    def _smpp_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme != "smpp" or not parts.hostname:
                raise ValueError("must look like smpp://system_id:password@host:port")
            parts.port  # noqa: B018
        return value

    @field_validator("broker_url", "redis_url")
    @classmethod
    def _redis_like(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError("must be a URL such as redis://127.0.0.1:6379/0")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist")
        return value

    @model_validator(mode="after")
    def _pairs(self) -> Settings:
        if bool(self.root_access_key_id) != bool(self.root_secret_access_key):
            raise ValueError(
                "HERALD_ROOT_ACCESS_KEY_ID and HERALD_ROOT_SECRET_ACCESS_KEY must be set together"
            )
        if self.sms_transport == "smpp" and not self.smpp_url:
            raise ValueError("HERALD_SMS_TRANSPORT=smpp needs HERALD_SMPP_URL")
        return self

    # -- derived -------------------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        """No broker configured: the worker runs inside the API process."""
        return self.broker_url is None

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Users paste libpq-style URLs; SQLAlchemy's default driver for them is psycopg2.
            for prefix in ("postgres://", "postgresql://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix) :]
            return url
        return f"sqlite:///{(self.data_dir / 'herald.db').resolve()}"

    @property
    def burst(self) -> int:
        return self.rate_limit_burst or max(1, int(self.rate_limit_rps))

    def fernet_key(self) -> bytes:
        """The key that encrypts secrets at rest: a Fernet key derived from
        ``HERALD_SECRET_KEY`` with HKDF-SHA256.

        The embedded default generates one on first start and keeps it in ``data_dir``.
        """
        return _derive(self._secret_key_value())

    def otp_key(self, app_id: str) -> bytes:
        """The HMAC key one-time passwords of an app are hashed with, derived from
        ``HERALD_SECRET_KEY`` (a new secret key invalidates codes outstanding, which live
        minutes at most)."""
        return HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"herald",
            info=b"herald one-time passwords v1:" + app_id.encode(),
        ).derive(self._secret_key_value().encode())

    def legacy_fernet_keys(self) -> list[bytes]:
        """Keys that may still be needed to read what was stored before: the single-SHA-256
        derivation used until issue 14, and ``HERALD_PREVIOUS_SECRET_KEY`` (both
        derivations) while an operator moves to a new secret. Never used to encrypt."""
        keys = [_legacy_derive(self._secret_key_value())]
        if self.previous_secret_key:
            keys += [_derive(self.previous_secret_key), _legacy_derive(self.previous_secret_key)]
        return keys

    def _secret_key_value(self) -> str:
        if self.secret_key:
            return self.secret_key
        if not self.embedded and self.database_url:
            raise ConfigError(
                "HERALD_SECRET_KEY must be set when HERALD_DATABASE_URL is set: it encrypts "
                f"channel credentials and access-key secrets at rest; generate one with: "
                f"{KEYGEN_COMMAND}"
            )
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
        return path.read_text().strip()


def _derive(secret: str) -> bytes:
    # The secret is checked to be long and random (check_secret), so HKDF suffices: a slow
    # password hash would only add start-up time. The info label versions the derivation.
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"herald", info=b"herald at-rest key v2"
    ).derive(secret.encode())
    return base64.urlsafe_b64encode(key)


def _legacy_derive(secret: str) -> bytes:
    return base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest())


def load_settings() -> Settings:
    """Read the environment, turning validation errors into one readable ConfigError."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err.get("loc") or ()
            name = "HERALD_" + str(loc[0]).upper() if loc else "configuration"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
