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

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PINPOINT_DEFAULT_RPS = 6000.0
MIN_RESULT_RETENTION_S = 3600


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

    @field_validator(
        "apns_url", "apns_sandbox_url", "fcm_url", "adm_url", "baidu_url", "twilio_url"
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
        """The key that encrypts secrets at rest (a Fernet key derived from ``HERALD_SECRET_KEY``).

        The embedded default generates one on first start and keeps it in ``data_dir``.
        """
        raw = self.secret_key
        if not raw:
            if not self.embedded and self.database_url:
                raise ConfigError(
                    "HERALD_SECRET_KEY must be set when HERALD_DATABASE_URL is set: it encrypts "
                    "channel credentials and access-key secrets at rest"
                )
            path = self.data_dir / "secret.key"
            if not path.exists():
                self.data_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(secrets.token_urlsafe(32))
            raw = path.read_text().strip()
        return base64.urlsafe_b64encode(hashlib.sha256(raw.encode()).digest())


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
