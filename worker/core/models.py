"""The data model (DESIGN.md §5). Postgres in production, SQLite for the embedded default.

The ``deliveries`` table is the result table dashboards read: one row per (request,
recipient), where a recipient is an endpoint id (user and endpoint sends) or an address
(address sends). ``delivery_attempts`` keeps every try. Rows older than the retention window
are pruned (worker/delivery/retention.py); ``delivery_totals``, ``attempt_totals`` and
``rollup_state`` keep what the fleet-wide counters need of them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: Json, datetime: DateTime(timezone=True)}


class Application(Base):
    __tablename__ = "applications"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # UpdateApplicationSettings' members as last merged (wire names); {} until the first.
    # A server default too: an API process of the previous release, still running during a
    # rolling upgrade, inserts apps without this column.
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    settings_updated_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class Endpoint(Base):
    __tablename__ = "endpoints"
    __table_args__ = (
        Index("ix_endpoints_app_id_user_id", "app_id", "user_id"),
        # Endpoint ids are case-insensitive (the model: "The case insensitive unique
        # identifier"): one endpoint per folded id, which keeps the case it was created with.
        UniqueConstraint("app_id", "id_key"),
    )

    app_id: Mapped[str] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # endpoint_key(id), computed in Python: SQL lower() differs by database and locale.
    id_key: Mapped[str] = mapped_column(Text)
    channel_type: Mapped[str | None] = mapped_column(String(24))
    address: Mapped[str | None] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), default="ACTIVE")
    opt_out: Mapped[str] = mapped_column(String(16), default="NONE")
    # The rest of the endpoint document (Attributes, Metrics, User.UserAttributes,
    # Demographic, Location, EffectiveDate, RequestId), wire names.
    document: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


def endpoint_key(endpoint_id: str) -> str:
    """The case-folded form that identifies an endpoint within its app."""
    return endpoint_id.lower()


class Channel(Base):
    __tablename__ = "channels"

    app_id: Mapped[str] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True
    )
    channel_type: Mapped[str] = mapped_column(String(24), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Non-secret members, wire names (BundleId, FromAddress, SenderId, ...).
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Secret members as one Fernet token over their JSON; never returned by the API.
    secrets: Mapped[bytes | None] = mapped_column(LargeBinary)
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SendRequest(Base):
    """One accepted SendUsersMessages or SendMessages request (its payload, as received)."""

    __tablename__ = "message_requests"
    __table_args__ = (
        Index("ix_message_requests_app_id_created_at", "app_id", "created_at"),
        # Retention finds requests older than the window, whatever their app.
        Index("ix_message_requests_created_at", "created_at"),
        # Maintenance drops sealed substitutions once their deliveries are final.
        Index(
            "ix_message_requests_sealed",
            "id",
            postgresql_where=text("sealed_substitutions IS NOT NULL"),
            sqlite_where=text("sealed_substitutions IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("applications.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # "users" | "messages"
    # The request body as validated (wire names), so workers render from exactly it.
    payload: Mapped[dict[str, Any]]
    trace_id: Mapped[str | None] = mapped_column(String(256))
    recipients: Mapped[int] = mapped_column(Integer)
    # Substitutions that must not be stored in clear (a one-time password): Fernet-encrypted
    # JSON, merged over the payload's only while a worker renders the message.
    sealed_substitutions: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class Delivery(Base):
    """One recipient of one request: its current (and eventually final) outcome."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("request_id", "recipient"),
        Index("ix_deliveries_app_id_created_at", "app_id", "created_at"),
        Index("ix_deliveries_status_created_at", "delivery_status", "created_at"),
        # The recovery sweep and the API's wait look only at unfinished rows.
        Index(
            "ix_deliveries_unfinished",
            "request_id",
            "next_attempt_at",
            postgresql_where=text("NOT final"),
            sqlite_where=text("NOT final"),
        ),
        # The per-app in-flight cap counts an app's unfinished rows at every send.
        Index(
            "ix_deliveries_app_id_unfinished",
            "app_id",
            postgresql_where=text("NOT final"),
            sqlite_where=text("NOT final"),
        ),
        # Retention deletes final rows oldest first.
        Index(
            "ix_deliveries_final_at",
            "final_at",
            postgresql_where=text("final"),
            sqlite_where=text("final"),
        ),
        ForeignKeyConstraint(["request_id"], ["message_requests.id"], ondelete="CASCADE"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(36))
    app_id: Mapped[str] = mapped_column(String(32))
    # The key in the response: endpoint id for user and endpoint sends, the address for
    # address sends, "user:<id>" for a user with no endpoints.
    recipient: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str | None] = mapped_column(String(256))
    endpoint_id: Mapped[str | None] = mapped_column(String(128))
    channel_type: Mapped[str | None] = mapped_column(String(24))
    address: Mapped[str | None] = mapped_column(Text)
    delivery_status: Mapped[str | None] = mapped_column(String(24))  # None: not yet attempted
    status_code: Mapped[int | None] = mapped_column(Integer)
    status_message: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    updated_token: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    next_attempt_at: Mapped[datetime | None]
    # A worker holds the row while it sends; an expired lease means the worker died.
    lease_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    final_at: Mapped[datetime | None]


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(32))
    delivery_status: Mapped[str] = mapped_column(String(24))
    status_code: Mapped[int] = mapped_column(Integer)
    status_message: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    duration_ms: Mapped[float]


# attempt_totals' latency bucket columns, one per bound of worker.results.metrics.LATENCY_BUCKETS_S.
LATENCY_BUCKET_COLUMNS = (
    "le_0_005", "le_0_01", "le_0_025", "le_0_05", "le_0_1", "le_0_25", "le_0_5",
    "le_1", "le_2_5", "le_5", "le_10", "le_30",
)


class DeliveryTotal(Base):
    """Final deliveries that retention has deleted, counted by channel and status."""

    __tablename__ = "delivery_totals"

    channel_type: Mapped[str] = mapped_column(String(24), primary_key=True)  # "" for none
    delivery_status: Mapped[str] = mapped_column(String(24), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class AttemptTotal(Base):
    """Attempts rolled up (ids up to ``rollup_state.attempts_rolled_upto``), cumulative."""

    __tablename__ = "attempt_totals"

    channel_type: Mapped[str] = mapped_column(String(24), primary_key=True)  # "" for none
    provider: Mapped[str] = mapped_column(String(32), primary_key=True)
    delivery_status: Mapped[str] = mapped_column(String(24), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    retries: Mapped[int] = mapped_column(BigInteger)
    duration_ms: Mapped[float]
    # Cumulative counts of attempts no longer than each bound (Prometheus' le buckets).
    le_0_005: Mapped[int] = mapped_column(BigInteger)
    le_0_01: Mapped[int] = mapped_column(BigInteger)
    le_0_025: Mapped[int] = mapped_column(BigInteger)
    le_0_05: Mapped[int] = mapped_column(BigInteger)
    le_0_1: Mapped[int] = mapped_column(BigInteger)
    le_0_25: Mapped[int] = mapped_column(BigInteger)
    le_0_5: Mapped[int] = mapped_column(BigInteger)
    le_1: Mapped[int] = mapped_column(BigInteger)
    le_2_5: Mapped[int] = mapped_column(BigInteger)
    le_5: Mapped[int] = mapped_column(BigInteger)
    le_10: Mapped[int] = mapped_column(BigInteger)
    le_30: Mapped[int] = mapped_column(BigInteger)


class RollupState(Base):
    """One row: how far ``delivery_attempts`` has been rolled up into ``attempt_totals``.

    A roll-up takes ids up to the highest id an earlier pass saw (``attempts_seen_upto``, at
    ``attempts_seen_at``), never the highest id now: ids are handed out before commit, so a
    row with a lower id may still be invisible when a higher one is seen.
    """

    __tablename__ = "rollup_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    attempts_rolled_upto: Mapped[int] = mapped_column(BigInteger)
    attempts_seen_upto: Mapped[int] = mapped_column(BigInteger)
    attempts_seen_at: Mapped[datetime | None]


class AccessKey(Base):
    __tablename__ = "access_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Fernet token of the secret: SigV4 needs the secret itself, so it cannot be a hash.
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    # Application ids this key may use; None means every application.
    app_ids: Mapped[list[str] | None] = mapped_column(Json)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class DashboardToken(Base):
    """A dashboard login link that has been used, or a signed-in dashboard session.

    Both are HMAC-signed tokens any API process can verify; this table adds what a signature
    cannot say: a link works once, and a session ends when its owner signs out. Rows are
    deleted once expired.
    """

    __tablename__ = "dashboard_tokens"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))  # "login" (used) or "session"
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AppEvent(Base):
    """An event accepted by PutEvents, kept as an outbox for the app's event stream.

    Rows are appended in arrival order (``id``); the stream forwards the unforwarded ones of
    an app in ``id`` order and stamps ``forwarded_at`` in the transaction that records the
    sink's acceptance, so each event goes out at least once and in order.
    """

    __tablename__ = "app_events"
    __table_args__ = (
        # What the event stream reads next: an app's unforwarded events, oldest first.
        Index(
            "ix_app_events_unforwarded",
            "app_id",
            "id",
            postgresql_where=text("forwarded_at IS NULL"),
            sqlite_where=text("forwarded_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    app_id: Mapped[str] = mapped_column(ForeignKey("applications.id", ondelete="CASCADE"))
    endpoint_id: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str] = mapped_column(Text)  # the client's key in Events
    event_type: Mapped[str] = mapped_column(String(64))
    event_timestamp: Mapped[datetime]  # the client's Timestamp
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    session: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # The event as the client sent it (wire names), for the record's other members.
    event: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]  # arrival, Pinpoint's arrival_timestamp
    forwarded_at: Mapped[datetime | None]


class OneTimePassword(Base):
    """The code SendOTPMessage sent to a destination under a reference, as an HMAC only.

    One row per (app, reference, destination): a new code replaces the old. Verification spends
    an attempt and checks the code in one locked step, so concurrent guesses cannot both win.
    """

    __tablename__ = "one_time_passwords"

    app_id: Mapped[str] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), primary_key=True
    )
    reference_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    destination: Mapped[str] = mapped_column(String(32), primary_key=True)  # E.164
    code_hash: Mapped[bytes] = mapped_column(LargeBinary)
    attempts_left: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]
    request_id: Mapped[str] = mapped_column(String(36))  # the send (message_requests.id)
    created_at: Mapped[datetime]
