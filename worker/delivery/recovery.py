"""The recovery sweep: Postgres is the source of truth for outstanding work.

A row that is not final and not held by a live lease, whose next attempt was due more than a
grace period ago, has been lost — its worker was SIGKILLed, or the broker restarted empty.
The sweep hands such rows out again. Rows are locked with SKIP LOCKED, so several workers may
sweep at once without handing out the same row twice in one round.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta

import structlog
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker.core.config import Settings
from worker.core.db import ping, utcnow
from worker.core.models import Delivery
from worker.core.outages import BROKER, DATABASE, broker_unreachable, database_unreachable
from worker.delivery.batch import WRITE_RETRY_MAX_S
from worker.delivery.retention import maintain

log = structlog.get_logger("herald.recovery")

SWEEP_LIMIT = 5000


def sweep(
    sessions: sessionmaker[Session],
    enqueue: Callable[[str, list[int]], None],
    *,
    grace_s: float,
    batch_size: int,
) -> int:
    """Re-enqueue abandoned deliveries; returns how many rows were handed out."""
    now = utcnow()
    cutoff = now - timedelta(seconds=grace_s)
    with sessions() as session, session.begin():
        rows = session.execute(
            select(Delivery.id, Delivery.request_id)
            .where(
                Delivery.final.is_(False),
                or_(
                    and_(Delivery.lease_until.is_not(None), Delivery.lease_until < now),
                    and_(Delivery.lease_until.is_(None), Delivery.next_attempt_at < cutoff),
                ),
            )
            .order_by(Delivery.id)
            .limit(SWEEP_LIMIT)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return 0
        ids = [row_id for row_id, _ in rows]
        # Due now and no longer leased: the next sweep leaves them alone for another grace
        # period (an expired lease left in place would hand them out again on every sweep).
        session.execute(
            update(Delivery).where(Delivery.id.in_(ids))
            .values(next_attempt_at=now, lease_until=None)
        )
    by_request: dict[str, list[int]] = defaultdict(list)
    for row_id, request_id in rows:
        by_request[request_id].append(row_id)
    for request_id, delivery_ids in by_request.items():
        for start in range(0, len(delivery_ids), batch_size):
            enqueue(request_id, delivery_ids[start : start + batch_size])
    return len(rows)


class Sweeper:
    """The sweep on a timer, riding out outages of the database and the broker.

    After a database outage it waits before sweeping again: live workers are still holding the
    outcomes of sends made meanwhile (``batch.write_outcomes``) and write them within
    a second of the database's return, but their leases may have run out while it was away. A
    sweep in that moment would hand those rows — already sent — to another worker.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        enqueue: Callable[[str, list[int]], None],
        *,
        grace_s: float,
        batch_size: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._enqueue = enqueue
        self._grace_s = grace_s
        self._batch_size = batch_size
        self._clock = clock
        self._database_was_away = False
        self._settle_until = 0.0
        self.settle_s = max(grace_s, 3 * WRITE_RETRY_MAX_S)

    def tick(self) -> int:
        """One sweep, unless the database is away or has just come back; never raises for an
        outage. Returns how many rows were handed out."""
        try:
            if self._database_was_away:
                ping(self._sessions)
                self._database_was_away = False
                self._settle_until = self._clock() + self.settle_s
                DATABASE.back()
            if self._clock() < self._settle_until:
                return 0
            found = sweep(self._sessions, self._enqueue, grace_s=self._grace_s,
                          batch_size=self._batch_size)
        except Exception as exc:
            # Rows handed out but not enqueued are due again after the grace period: nothing
            # is lost, the next sweep after the outage picks them up.
            if database_unreachable(exc):
                self._database_was_away = True
                DATABASE.lost(exc)
            elif broker_unreachable(exc):
                BROKER.lost(exc)
            else:
                log.exception("recovery sweep failed")
            return 0
        if found:
            log.warning("recovered abandoned deliveries", count=found)
        return found


class Housekeeping:
    """What every worker runs on a timer, in the Celery worker's main process and in
    ``herald serve`` alike: the recovery sweep every ``HERALD_SWEEP_INTERVAL_S`` and result
    retention (``worker.delivery.retention.maintain``) every ``HERALD_RETENTION_INTERVAL_S``."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        enqueue: Callable[[str, list[int]], None],
        clock: Callable[[], float] = time.monotonic,
        retention: Callable[[sessionmaker[Session], Settings], object] = maintain,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._clock = clock
        self._retention = retention
        self._next_maintenance = clock()
        self.sweeper = Sweeper(sessions, enqueue, grace_s=settings.recovery_grace_s,
                               batch_size=settings.batch_size, clock=clock)

    def tick(self) -> None:
        self.sweeper.tick()
        if self._clock() < self._next_maintenance:
            return
        self._next_maintenance = self._clock() + self._settings.retention_interval_s
        try:
            self._retention(self._sessions, self._settings)
        except Exception as exc:
            if not database_unreachable(exc):
                log.exception("result retention failed")
                return
            DATABASE.lost(exc)
