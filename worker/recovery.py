"""The recovery sweep: Postgres is the source of truth for outstanding work.

A row that is not final and not held by a live lease, whose next attempt was due more than a
grace period ago, has been lost — its worker was SIGKILLed, or the broker restarted empty.
The sweep hands such rows out again. Rows are locked with SKIP LOCKED, so several workers may
sweep at once without handing out the same row twice in one round.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker.db import utcnow
from worker.models import Delivery

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
        # Due now: the next sweep leaves them alone for another grace period.
        session.execute(
            update(Delivery).where(Delivery.id.in_(ids)).values(next_attempt_at=now)
        )
    by_request: dict[str, list[int]] = defaultdict(list)
    for row_id, request_id in rows:
        by_request[request_id].append(row_id)
    for request_id, request_ids in by_request.items():
        for start in range(0, len(request_ids), batch_size):
            enqueue(request_id, request_ids[start : start + batch_size])
    return len(rows)
