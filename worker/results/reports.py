"""Read-side queries over the result table for the operations dashboard.

Every query is bounded twice: by a time window on ``created_at`` (so Postgres walks
``ix_deliveries_status_created_at``, or ``ix_deliveries_app_id_created_at`` when one app is
asked for) and by a LIMIT. A request's page is bounded by its id instead (the
``(request_id, recipient)`` unique index) and a LIMIT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, and_, cast, func, or_, select
from sqlalchemy.orm import Session

from worker.core.db import utcnow
from worker.core.models import Application, Delivery, DeliveryAttempt, SendRequest
from worker.core.vocabulary import PENDING, PUSH_TYPES, DeliveryStatus

STATUSES = tuple(s.value for s in DeliveryStatus)
FAILURES = (
    DeliveryStatus.PERMANENT_FAILURE.value,
    DeliveryStatus.TEMPORARY_FAILURE.value,
    DeliveryStatus.THROTTLED.value,
    DeliveryStatus.TIMEOUT.value,
    DeliveryStatus.UNKNOWN_FAILURE.value,
)
# Outcomes that were not delivery attempts: left out of success rates.
NOT_ATTEMPTED = (DeliveryStatus.OPT_OUT.value, DeliveryStatus.DUPLICATE.value)


@dataclass(frozen=True)
class Window:
    """A reporting window ending now, with the chart's bucket width."""

    name: str
    seconds: int
    bucket_s: int
    until: datetime = field(default_factory=utcnow)

    @property
    def since(self) -> datetime:
        return self.until - timedelta(seconds=self.seconds)

    def bucket_starts(self) -> list[datetime]:
        first = int(self.since.timestamp()) // self.bucket_s * self.bucket_s
        last = int(self.until.timestamp()) // self.bucket_s * self.bucket_s
        return [datetime.fromtimestamp(t, UTC) for t in range(first, last + 1, self.bucket_s)]


WINDOWS = {
    "1h": (3600, 60),
    "6h": (6 * 3600, 300),
    "24h": (24 * 3600, 1800),
    "7d": (7 * 24 * 3600, 6 * 3600),
}
DEFAULT_WINDOW = "1h"


def window(name: str | None, until: datetime | None = None) -> Window:
    chosen = name if name in WINDOWS else DEFAULT_WINDOW
    seconds, bucket_s = WINDOWS[chosen]
    return Window(chosen, seconds, bucket_s, until or utcnow())


@dataclass(frozen=True)
class TimelinePoint:
    bucket: datetime
    channel: str
    status: str
    count: int


@dataclass(frozen=True)
class SuccessRate:
    app_id: str
    app_name: str
    channel: str
    successful: int
    failed: int
    not_attempted: int

    @property
    def attempted(self) -> int:
        return self.successful + self.failed

    @property
    def rate(self) -> float | None:
        return self.successful / self.attempted if self.attempted else None


@dataclass(frozen=True)
class Failure:
    request_id: str
    app_id: str
    user_id: str | None
    endpoint_id: str | None
    channel: str
    address: str
    status: str
    status_code: int | None
    status_message: str
    attempts: int
    final: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Attempt:
    attempt: int
    provider: str
    status: str
    status_code: int
    status_message: str
    message_id: str | None
    started_at: datetime
    duration_ms: float


@dataclass
class RecipientRow:
    recipient: str
    user_id: str | None
    endpoint_id: str | None
    channel: str
    address: str
    status: str
    status_code: int | None
    status_message: str
    message_id: str | None
    updated_token: str | None
    attempts: int
    final: bool
    created_at: datetime
    updated_at: datetime
    final_at: datetime | None
    tries: list[Attempt] = field(default_factory=list)


@dataclass
class RequestReport:
    request_id: str
    app_id: str
    app_name: str
    kind: str
    trace_id: str | None
    recipients: int
    created_at: datetime
    rows: list[RecipientRow]
    truncated: bool

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return dict(sorted(counts.items()))


def display_address(channel: str | None, address: str | None) -> str:
    """Device tokens are credentials: show enough to recognise one, not to use it."""
    if not address:
        return ""
    if channel in PUSH_TYPES and len(address) > 12:
        return f"{address[:8]}…{address[-4:]}"
    return address


def display_recipient(channel: str | None, recipient: str) -> str:
    """A result row's recipient as the dashboard may show it: a SendMessages row is named by
    its address, which for a push channel is the device token."""
    prefix = "address:"
    if recipient.startswith(prefix):
        return prefix + display_address(channel, recipient[len(prefix):])
    return recipient


def _in_window(win: Window, app_id: str | None) -> ColumnElement[bool]:
    created = and_(Delivery.created_at >= win.since, Delivery.created_at <= win.until)
    if app_id:
        return and_(Delivery.app_id == app_id, created)
    # Led by delivery_status so Postgres can walk ix_deliveries_status_created_at.
    return and_(
        or_(Delivery.delivery_status.in_(STATUSES), Delivery.delivery_status.is_(None)), created
    )


def _bucket(session: Session, bucket_s: int) -> ColumnElement[Any]:
    """The bucket's start, in epoch seconds, for each row's ``created_at``."""
    if session.get_bind().dialect.name == "sqlite":
        seconds = cast(func.strftime("%s", Delivery.created_at), BigInteger)
        return (seconds // bucket_s) * bucket_s
    return func.floor(func.extract("epoch", Delivery.created_at) / bucket_s) * bucket_s


def timeline(
    session: Session, win: Window, app_id: str | None = None, limit: int = 20_000
) -> list[TimelinePoint]:
    """Deliveries created in the window, counted per bucket, channel and latest status."""
    bucket = _bucket(session, win.bucket_s).label("bucket")
    rows = session.execute(
        select(bucket, Delivery.channel_type, Delivery.delivery_status, func.count())
        .where(_in_window(win, app_id))
        .group_by(bucket, Delivery.channel_type, Delivery.delivery_status)
        .limit(limit)
    )
    return [
        TimelinePoint(
            bucket=datetime.fromtimestamp(int(start) // win.bucket_s * win.bucket_s, UTC),
            channel=channel or "NONE",
            status=status or PENDING,
            count=int(count),
        )
        for start, channel, status, count in rows
    ]


def success_rates(
    session: Session, win: Window, app_id: str | None = None, limit: int = 500
) -> list[SuccessRate]:
    """Final outcomes in the window per app and channel: SUCCESSFUL over attempted."""
    rows = session.execute(
        select(Delivery.app_id, Delivery.channel_type, Delivery.delivery_status, func.count())
        .where(_in_window(win, app_id), Delivery.final.is_(True))
        .group_by(Delivery.app_id, Delivery.channel_type, Delivery.delivery_status)
        .limit(limit * len(STATUSES))
    )
    totals: dict[tuple[str, str], list[int]] = {}
    for app, channel, status, count in rows:
        entry = totals.setdefault((app, channel or "NONE"), [0, 0, 0])
        if status == DeliveryStatus.SUCCESSFUL.value:
            entry[0] += int(count)
        elif status in NOT_ATTEMPTED:
            entry[2] += int(count)
        else:
            entry[1] += int(count)
    names = _app_names(session, {app for app, _ in totals})
    rates = [
        SuccessRate(app, names.get(app, ""), channel, *counts)
        for (app, channel), counts in totals.items()
    ]
    rates.sort(key=lambda r: (r.rate if r.rate is not None else 2.0, r.app_name, r.channel))
    return rates[:limit]


def latest_failures(
    session: Session, win: Window, app_id: str | None = None, limit: int = 50
) -> list[Failure]:
    """The newest deliveries in the window whose latest outcome is a failure."""
    created = and_(Delivery.created_at >= win.since, Delivery.created_at <= win.until)
    where = [Delivery.delivery_status.in_(FAILURES), created]
    if app_id:
        where.append(Delivery.app_id == app_id)
    rows = session.scalars(
        select(Delivery).where(*where).order_by(Delivery.created_at.desc(), Delivery.id.desc())
        .limit(limit)
    )
    return [
        Failure(
            request_id=row.request_id,
            app_id=row.app_id,
            user_id=row.user_id,
            endpoint_id=row.endpoint_id,
            channel=row.channel_type or "NONE",
            address=display_address(row.channel_type, row.address),
            status=row.delivery_status or PENDING,
            status_code=row.status_code,
            status_message=row.status_message or "",
            attempts=row.attempts,
            final=row.final,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        for row in rows
    ]


def request_report(
    session: Session, request_id: str, limit: int = 2_000, attempts_limit: int = 20_000
) -> RequestReport | None:
    """One request's recipients with every attempt, or None if there is no such request."""
    request = session.get(SendRequest, request_id)
    if request is None:
        return None
    deliveries = list(session.scalars(
        select(Delivery).where(Delivery.request_id == request_id).order_by(Delivery.id)
        .limit(limit + 1)
    ))
    truncated = len(deliveries) > limit
    deliveries = deliveries[:limit]
    rows = {
        d.id: RecipientRow(
            recipient=display_recipient(d.channel_type, d.recipient),
            user_id=d.user_id,
            endpoint_id=d.endpoint_id,
            channel=d.channel_type or "NONE",
            address=display_address(d.channel_type, d.address),
            status=d.delivery_status or PENDING,
            status_code=d.status_code,
            status_message=d.status_message or "",
            message_id=d.message_id,
            updated_token=display_address(d.channel_type, d.updated_token) or None,
            attempts=d.attempts,
            final=d.final,
            created_at=d.created_at,
            updated_at=d.updated_at,
            final_at=d.final_at,
        )
        for d in deliveries
    }
    if rows:
        for attempt in session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(list(rows)))
            .order_by(DeliveryAttempt.delivery_id, DeliveryAttempt.attempt, DeliveryAttempt.id)
            .limit(attempts_limit)
        ):
            rows[attempt.delivery_id].tries.append(Attempt(
                attempt=attempt.attempt,
                provider=attempt.provider,
                status=attempt.delivery_status,
                status_code=attempt.status_code,
                status_message=attempt.status_message or "",
                message_id=attempt.message_id,
                started_at=attempt.started_at,
                duration_ms=attempt.duration_ms,
            ))
    return RequestReport(
        request_id=request.id,
        app_id=request.app_id,
        app_name=_app_names(session, {request.app_id}).get(request.app_id, ""),
        kind=request.kind,
        trace_id=request.trace_id,
        recipients=request.recipients,
        created_at=request.created_at,
        rows=list(rows.values()),
        truncated=truncated,
    )


def _app_names(session: Session, app_ids: Sequence[str] | set[str]) -> dict[str, str]:
    if not app_ids:
        return {}
    return dict(session.execute(
        select(Application.id, Application.name).where(Application.id.in_(list(app_ids)))
    ).all())
