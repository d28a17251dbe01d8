"""Result retention: deletes final results older than ``HERALD_RESULT_RETENTION_S`` without
letting a fleet-wide counter go down (DESIGN.md §8, "Outages and retention").

What goes, oldest first, in short transactions of at most ``batch_size`` rows each:

- final ``deliveries`` rows whose ``final_at`` is older than the window, with their
  ``delivery_attempts``; rows still in flight are never touched;
- ``message_requests`` older than the window with no delivery left (so a request stays while
  any of its deliveries stays).

And, whatever the window, at every pass: one-time passwords past their expiry (never valid
again), and the sealed code of a one-time-password send once all its deliveries are final
(nothing will render it again).

What stays, so that ``/metrics`` counts survive (see worker/results/metrics.py):

- each deleted final row is added to ``delivery_totals`` in the transaction that deletes it;
- attempts are first rolled up into ``attempt_totals`` by :func:`roll_up_attempts`, which
  advances the ``rollup_state`` watermark; a delivery is deleted only when every attempt of
  it is at or below the watermark.

Several workers may run this at once: on Postgres each batch takes its rows ``FOR UPDATE SKIP
LOCKED``, so they share the work and never wait on each other; the roll-up is one pass at a
time (the others skip it). On SQLite (the embedded mode) there is one writer at a time; the
same statements run without the row locks, and every total is added from what the ``DELETE``
itself returned, so a row is never counted twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from worker.core.config import Settings
from worker.core.db import utcnow
from worker.core.models import (
    LATENCY_BUCKET_COLUMNS,
    AttemptTotal,
    Delivery,
    DeliveryAttempt,
    DeliveryTotal,
    OneTimePassword,
    RollupState,
    SendRequest,
)
from worker.results.metrics import aggregate_attempts

log = structlog.get_logger("herald.retention")

BATCH_SIZE = 1000
# One maintenance pass deletes at most this many batches of each kind; a backlog (retention
# just enabled, or shortened) drains over several passes instead of one long one.
MAX_BATCHES_PER_PASS = 50
# A roll-up takes attempt ids up to the highest one seen at least this long ago: ids are
# handed out before commit, and a worker's transaction that inserted attempts commits within
# milliseconds, so a row with a lower id has committed by then (the same assumption the
# fleet collector made when it folded attempts itself).
ROLLUP_SETTLE_S = 10.0


@dataclass
class PruneReport:
    deliveries: int = 0
    attempts: int = 0
    requests: int = 0
    batches: int = 0
    attempts_rolled_up: int = 0
    # False when max_batches stopped a kind with rows still to delete.
    complete: bool = True

    def add(self, other: PruneReport) -> None:
        """Count another pass's work in this report."""
        self.deliveries += other.deliveries
        self.attempts += other.attempts
        self.requests += other.requests
        self.batches += other.batches
        self.attempts_rolled_up += other.attempts_rolled_up
        self.complete = other.complete

    def __str__(self) -> str:
        return (f"deleted {self.deliveries} deliveries, {self.attempts} attempts and "
                f"{self.requests} requests in {self.batches} batches")


# -- attempts roll-up ------------------------------------------------------------------------


def roll_up_attempts(
    sessions: sessionmaker[Session], *, settle_s: float = ROLLUP_SETTLE_S,
    now: datetime | None = None,
) -> int:
    """Fold attempts up to the highest id seen ``settle_s`` ago into ``attempt_totals`` and
    advance the watermark; record the highest id now for a later pass. Returns the number of
    attempts rolled up (0 when another worker's pass is under way or nothing has settled)."""
    now = now or utcnow()
    with sessions() as session, session.begin():
        state = session.scalar(
            select(RollupState).where(RollupState.id == 1).with_for_update(skip_locked=True)
        )
        if state is None:  # another worker is rolling up (the migration creates the row)
            return 0
        seen_at = _aware(state.attempts_seen_at)
        settled = seen_at is None or (now - seen_at).total_seconds() >= settle_s
        if not settled:
            return 0  # keep the older observation: it settles sooner than a new one would
        old_rolled, old_seen = state.attempts_rolled_upto, state.attempts_seen_upto
        new_rolled = max(old_rolled, old_seen) if seen_at is not None else old_rolled
        highest = session.scalar(select(func.max(DeliveryAttempt.id))) or 0
        # Compare-and-set: SQLite has no row lock, and pysqlite runs the SELECT above outside
        # the transaction, so two processes may both get here; only one moves the watermark.
        claimed = session.execute(
            update(RollupState)
            .where(RollupState.id == 1, RollupState.attempts_rolled_upto == old_rolled,
                   RollupState.attempts_seen_upto == old_seen)
            .values(attempts_rolled_upto=new_rolled,
                    attempts_seen_upto=max(highest, new_rolled), attempts_seen_at=now)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return 0  # nothing was written
        return _add_attempt_totals(session, old_rolled, new_rolled)


def _add_attempt_totals(session: Session, after: int, upto: int) -> int:
    if upto <= after:
        return 0
    rolled = 0
    for channel, provider, status, count, retries, duration_ms, *buckets in session.execute(
        aggregate_attempts(after, upto)
    ):
        key = (channel or "", provider, status)
        totals = session.get(AttemptTotal, key)
        if totals is None:
            totals = AttemptTotal(channel_type=key[0], provider=provider, delivery_status=status,
                                  count=0, retries=0, duration_ms=0.0,
                                  **dict.fromkeys(LATENCY_BUCKET_COLUMNS, 0))
            session.add(totals)
        totals.count += int(count)
        totals.retries += int(retries or 0)
        totals.duration_ms += float(duration_ms or 0)
        for name, value in zip(LATENCY_BUCKET_COLUMNS, buckets, strict=True):
            setattr(totals, name, getattr(totals, name) + int(value or 0))
        rolled += int(count)
    return rolled


def _aware(value: datetime | None) -> datetime | None:
    """In UTC: SQLite hands timestamps back without their zone (Herald stores UTC), Postgres
    in the session's time zone."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# -- pruning ---------------------------------------------------------------------------------


def prune(
    sessions: sessionmaker[Session], *, retention_s: int, batch_size: int = BATCH_SIZE,
    max_batches: int | None = MAX_BATCHES_PER_PASS, now: datetime | None = None,
) -> PruneReport:
    """Delete final results older than ``retention_s`` (0: keep everything), at most
    ``max_batches`` transactions of ``batch_size`` rows for deliveries and as many for
    requests (None: until nothing is left)."""
    report = PruneReport()
    if retention_s <= 0:
        return report
    cutoff = (now or utcnow()) - timedelta(seconds=retention_s)
    for prune_batch in (_prune_deliveries, _prune_requests):
        batches = 0
        while max_batches is None or batches < max_batches:
            with sessions() as session, session.begin():
                deleted = prune_batch(session, cutoff, batch_size, report)
            batches += 1
            if deleted < batch_size:
                break
        else:
            report.complete = False
        report.batches += batches
    return report


def _prune_deliveries(
    session: Session, cutoff: datetime, batch_size: int, report: PruneReport
) -> int:
    upto = _prunable_attempts_upto(session)
    ids = session.scalars(
        select(Delivery.id)
        .where(
            Delivery.final,
            Delivery.final_at < cutoff,
            ~exists().where(DeliveryAttempt.delivery_id == Delivery.id,
                            DeliveryAttempt.id > upto),
        )
        .order_by(Delivery.final_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    if not ids:
        return 0
    attempts = session.execute(
        delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(ids))
        .execution_options(synchronize_session=False)
    )
    # `final` again: on SQLite the candidates were read without a lock.
    deleted = session.execute(
        delete(Delivery).where(Delivery.id.in_(ids), Delivery.final)
        .returning(Delivery.channel_type, Delivery.delivery_status)
        .execution_options(synchronize_session=False)
    ).all()
    counts = Counter((channel or "", status or "") for channel, status in deleted)
    # Sorted, so concurrent batches take the totals' row locks in one order (no deadlock).
    for (channel, status), count in sorted(counts.items()):
        session.execute(_add_delivery_total(session, channel, status, count))
    report.deliveries += len(deleted)
    report.attempts += int(attempts.rowcount)  # type: ignore[attr-defined]
    return len(ids)


def _prunable_attempts_upto(session: Session) -> int:
    """The highest attempt id that may be deleted: rolled up, and never the newest row,
    because SQLite (without AUTOINCREMENT) gives a new row max(id) + 1 and would re-issue an
    id at or below the watermark, which no counter would ever see."""
    watermark = session.scalar(
        select(RollupState.attempts_rolled_upto).where(RollupState.id == 1)
    ) or 0
    highest = session.scalar(select(func.max(DeliveryAttempt.id))) or 0
    return min(watermark, highest - 1)


def _add_delivery_total(session: Session, channel: str, status: str, count: int) -> Any:
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(DeliveryTotal).values(
        channel_type=channel, delivery_status=status, count=count
    )
    return statement.on_conflict_do_update(
        index_elements=[DeliveryTotal.channel_type, DeliveryTotal.delivery_status],
        set_={"count": DeliveryTotal.count + statement.excluded.count},
    )


def _prune_requests(
    session: Session, cutoff: datetime, batch_size: int, report: PruneReport
) -> int:
    nothing_left = ~exists().where(Delivery.request_id == SendRequest.id)
    ids = session.scalars(
        select(SendRequest.id)
        .where(SendRequest.created_at < cutoff, nothing_left)
        .order_by(SendRequest.created_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    ).all()
    if not ids:
        return 0
    deleted = session.execute(
        delete(SendRequest).where(SendRequest.id.in_(ids), nothing_left)
        .execution_options(synchronize_session=False)
    )
    report.requests += int(deleted.rowcount)  # type: ignore[attr-defined]
    return len(ids)


def forget_spent_codes(sessions: sessionmaker[Session], now: datetime | None = None) -> int:
    """Delete expired one-time passwords, and drop a send's sealed code once every delivery
    of it is final. How many rows changed."""
    with sessions() as session, session.begin():
        expired = session.execute(
            delete(OneTimePassword).where(OneTimePassword.expires_at < (now or utcnow()))
            .execution_options(synchronize_session=False)
        )
        unfinished = exists().where(Delivery.request_id == SendRequest.id, ~Delivery.final)
        sealed = session.execute(
            update(SendRequest)
            .where(SendRequest.sealed_substitutions.is_not(None), ~unfinished)
            .values(sealed_substitutions=None)
            .execution_options(synchronize_session=False)
        )
        return int(expired.rowcount) + int(sealed.rowcount)  # type: ignore[attr-defined]


# -- the workers' pass -----------------------------------------------------------------------


def maintain(
    sessions: sessionmaker[Session], settings: Settings, *, max_batches: int | None =
    MAX_BATCHES_PER_PASS,
) -> PruneReport:
    """One maintenance pass, run by every worker every ``HERALD_RETENTION_INTERVAL_S``: roll
    attempts up (even when results are kept forever: it keeps ``/metrics`` cheap), then
    prune what is older than ``HERALD_RESULT_RETENTION_S``."""
    rolled = roll_up_attempts(sessions)
    forget_spent_codes(sessions)
    report = prune(sessions, retention_s=settings.result_retention_s, max_batches=max_batches)
    report.attempts_rolled_up = rolled
    if report.deliveries or report.requests:
        log.info("pruned old results", deliveries=report.deliveries, attempts=report.attempts,
                 requests=report.requests, batches=report.batches, complete=report.complete,
                 retention_s=settings.result_retention_s)
    return report


def final_left(
    sessions: sessionmaker[Session], *, retention_s: int, now: datetime | None = None
) -> int:
    """Final rows older than the window still held. Right after a complete prune these are
    the ones whose attempts are not rolled up yet (an index range of a few rows)."""
    if retention_s <= 0:
        return 0
    cutoff = (now or utcnow()) - timedelta(seconds=retention_s)
    with sessions() as session:
        return session.scalar(
            select(func.count()).select_from(Delivery)
            .where(Delivery.final, Delivery.final_at < cutoff)
        ) or 0


def oldest_result(session: Session) -> datetime | None:
    """When the oldest result still held was created (the lowest id: the primary key, not a
    scan)."""
    return _aware(session.scalar(select(Delivery.created_at).order_by(Delivery.id).limit(1)))
