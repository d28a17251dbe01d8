"""Delivery metrics for Prometheus, fleet-wide.

Workers run on many machines and Celery forks pool children, so a counter kept in a worker's
memory shows one process's share and dies with it. The result table already holds every
worker's outcomes (DESIGN.md §5), so the delivery metrics are read from it instead:
:class:`FleetCollector` is a custom collector that any API process's ``/metrics`` runs, and
one scrape target shows the whole fleet. No pushgateway, no worker-side exporter.

Retention (worker/delivery/retention.py) deletes old rows, and a counter must never go down, so what
pruning removes is kept as totals and every number is "totals + live rows", read in ONE
statement (one snapshot on Postgres under READ COMMITTED, and on SQLite, where pysqlite opens
no transaction for a SELECT) so a prune or roll-up committing between two reads is never
counted twice or missed:

- Deliveries by channel and status: ``delivery_totals`` (final rows pruned, added in the
  same transaction as their delete) plus one ``GROUP BY`` over ``deliveries``. Final rows
  never change again, so their count is a counter; rows still in flight are a gauge.
- Attempts, retries and provider latency: ``attempt_totals`` (attempts with ids up to the
  ``rollup_state`` watermark, rolled up by the workers' maintenance pass) plus the aggregate
  of the attempts above the watermark — a primary-key range of about one maintenance
  interval, whatever the table's size. Pruning only deletes attempts at or below the
  watermark, so a collector started after a prune reports what one started before it does.
- Queue depth: ``LLEN`` of the Celery queue on a Redis broker.

Reads are cached for ``HERALD_METRICS_CACHE_S`` (and never re-run sooner than 20 times their
own last duration, so a large table cannot turn scrapes into load). Every API process reports
the same fleet numbers: aggregate them with ``max``, not ``sum``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client import Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import ColumnElement, Select, case, func, literal, select, text, true, union_all
from sqlalchemy.orm import Session, sessionmaker

from worker.core.db import utcnow
from worker.core.models import (
    LATENCY_BUCKET_COLUMNS,
    AttemptTotal,
    Delivery,
    DeliveryAttempt,
    DeliveryTotal,
    RollupState,
)
from worker.core.vocabulary import INTERNAL_PROVIDER, PENDING, QUEUE

log = structlog.get_logger("herald.metrics")

# Provider call latency buckets, in seconds: push answers in tens of ms, SMTP and Twilio in
# hundreds, a provider near its timeout (HERALD_PROVIDER_TIMEOUT_S, 10 s) in the top buckets.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Outcomes Herald decided itself (render errors, channel disabled): attempts, not provider calls.
# kombu's Redis transport keeps priority levels as separate lists beside the queue's own.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
_STATEMENT_TIMEOUT_MS = 5000
assert len(LATENCY_BUCKET_COLUMNS) == len(LATENCY_BUCKETS_S)

# How long a SendUsersMessages call waited for final outcomes (DESIGN.md §4), by whether every
# recipient was final before HERALD_SYNC_TIMEOUT_S. Kept per API process (multiprocess-safe).
SYNC_WAIT = Histogram(
    "herald_sync_wait_seconds",
    "Time a send request waited for final outcomes before answering",
    ["result"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)


def record_sync_wait(seconds: float, *, complete: bool) -> None:
    SYNC_WAIT.labels(result="complete" if complete else "timeout").observe(seconds)


@dataclass
class _AttemptTotals:
    """Cumulative attempt counts and latency buckets for one (channel, provider, status)."""

    count: int = 0
    retries: int = 0
    duration_s: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_S))


@dataclass
class _Snapshot:
    # (channel, status, final) -> rows
    deliveries: dict[tuple[str, str, bool], int] = field(default_factory=dict)
    sending: int = 0
    # (channel, provider, status) -> totals
    attempts: dict[tuple[str, str, str], _AttemptTotals] = field(default_factory=dict)
    queue_depth: dict[str, int] = field(default_factory=dict)
    queue_unacked: int | None = None
    taken_at: float = 0.0
    query_s: float = 0.0


class FleetCollector(Collector):
    """Fleet-wide delivery metrics from the result table and the broker (see module doc)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        broker_url: str | None = None,
        queue: str = QUEUE,
        cache_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._queue = queue
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot = _Snapshot()
        self._errors = 0
        self._redis: Any = None
        if broker_url and broker_url.startswith(("redis://", "rediss://", "unix://")):
            import redis

            self._redis = redis.Redis.from_url(
                broker_url, socket_timeout=2, socket_connect_timeout=2
            )

    # -- refreshing ------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        """Re-read the numbers if the cache has expired (or ``force``); one reader at a time."""
        with self._lock:
            now = self._clock()
            snapshot = self._snapshot
            ttl = max(self._cache_s, 20 * snapshot.query_s)
            if not force and snapshot.taken_at and now - snapshot.taken_at < ttl:
                return
            began = time.perf_counter()
            try:
                fresh = _Snapshot()
                with self._sessions() as session, session.begin():
                    if session.bind is not None and session.bind.dialect.name == "postgresql":
                        session.execute(
                            text(f"SET LOCAL statement_timeout = {_STATEMENT_TIMEOUT_MS}")
                        )
                    fresh.deliveries, fresh.sending = _count_deliveries(session)
                    fresh.attempts = _count_attempts(session)
            except Exception as exc:
                self._errors += 1
                log.warning("fleet metrics not refreshed", error=f"{type(exc).__name__}: {exc}")
                # Serve the last numbers; try again after one cache period, not on every scrape.
                snapshot.taken_at = now
                return
            fresh.query_s = time.perf_counter() - began
            try:
                fresh.queue_depth, fresh.queue_unacked = self._queue_state()
            except Exception as exc:
                self._errors += 1
                log.warning("queue depth not read", error=f"{type(exc).__name__}: {exc}")
            fresh.taken_at = now
            self._snapshot = fresh

    def _queue_state(self) -> tuple[dict[str, int], int | None]:
        if self._redis is None:
            return {}, None
        pipe = self._redis.pipeline(transaction=False)
        pipe.llen(self._queue)
        for step in _PRIORITY_STEPS:
            pipe.llen(f"{self._queue}{_PRIORITY_SEPARATOR}{step}")
        pipe.hlen("unacked")  # kombu: tasks workers have reserved (prefetched or held for ETA)
        *lengths, unacked = pipe.execute()
        return {self._queue: sum(int(n) for n in lengths)}, int(unacked)

    # -- exposition ------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        self.refresh()
        with self._lock:
            snapshot = self._snapshot
            errors = self._errors
        yield from _delivery_families(snapshot)
        yield from _attempt_families(snapshot.attempts)
        if snapshot.queue_unacked is not None:
            depth = GaugeMetricFamily(
                "herald_queue_depth", "Delivery tasks waiting in the broker queue",
                labels=["queue"],
            )
            for queue, length in snapshot.queue_depth.items():
                depth.add_metric([queue], length)
            yield depth
            yield GaugeMetricFamily(
                "herald_queue_unacked",
                "Delivery tasks reserved by workers and not yet acknowledged (prefetched, "
                "running, or held until a retry's countdown)",
                value=snapshot.queue_unacked,
            )
        yield GaugeMetricFamily(
            "herald_fleet_metrics_age_seconds",
            "Age of the fleet-wide numbers served (they are cached between scrapes)",
            value=max(0.0, self._clock() - snapshot.taken_at) if snapshot.taken_at else 0.0,
        )
        yield GaugeMetricFamily(
            "herald_fleet_metrics_query_seconds",
            "How long the last refresh of the fleet-wide numbers took",
            value=snapshot.query_s,
        )
        yield CounterMetricFamily(
            "herald_fleet_metrics_errors",
            "Refreshes of the fleet-wide numbers that failed (the last numbers were served)",
            value=errors,
        )


def _count_deliveries(session: Session) -> tuple[dict[tuple[str, str, bool], int], int]:
    now = utcnow()
    live = select(
        Delivery.channel_type,
        Delivery.delivery_status,
        Delivery.final,
        func.count(),
        func.sum(case((Delivery.lease_until > now, 1), else_=0)),
    ).group_by(Delivery.channel_type, Delivery.delivery_status, Delivery.final)
    pruned = select(
        DeliveryTotal.channel_type, DeliveryTotal.delivery_status, true(), DeliveryTotal.count,
        literal(0),
    )
    counts: dict[tuple[str, str, bool], int] = {}
    sending = 0
    rows: Iterable[Sequence[Any]] = session.execute(union_all(live, pruned))
    for channel, status, final, count, leased in rows:
        key = (channel or "", status or PENDING, bool(final))
        counts[key] = counts.get(key, 0) + int(count)
        if not final:
            sending += int(leased or 0)
    return counts, sending


def _rolled_up_to() -> ColumnElement[int]:
    """The attempt id up to which attempts are in ``attempt_totals`` (a scalar subquery)."""
    return func.coalesce(
        select(RollupState.attempts_rolled_upto).where(RollupState.id == 1).scalar_subquery(), 0
    )


def aggregate_attempts(after: int, upto: int | None = None) -> Select[*tuple[Any, ...]]:
    """Attempts with ids in (after, upto], summed by (channel, provider, status), with the
    cumulative latency bucket counts computed by the database. Columns in the order of
    ``attempt_totals``: channel, provider, status, count, retries, duration_ms, buckets."""
    duration = DeliveryAttempt.duration_ms
    bucket_columns = [
        func.sum(case((duration <= bound * 1000, 1), else_=0)) for bound in LATENCY_BUCKETS_S
    ]
    query = (
        select(
            Delivery.channel_type,
            DeliveryAttempt.provider,
            DeliveryAttempt.delivery_status,
            func.count(),
            func.sum(case((DeliveryAttempt.attempt > 1, 1), else_=0)),
            func.sum(duration),
            *bucket_columns,
        )
        .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
        .where(DeliveryAttempt.id > after)
        .group_by(Delivery.channel_type, DeliveryAttempt.provider, DeliveryAttempt.delivery_status)
    )
    return query if upto is None else query.where(DeliveryAttempt.id <= upto)


def _add_attempt_row(
    totals: dict[tuple[str, str, str], _AttemptTotals], row: Sequence[Any]
) -> None:
    """Add one row shaped like :func:`aggregate_attempts`' to ``totals``."""
    channel, provider, status, count, retries, duration_ms, *buckets = row
    entry = totals.setdefault((channel or "", provider, status), _AttemptTotals())
    entry.count += int(count)
    entry.retries += int(retries or 0)
    entry.duration_s += float(duration_ms or 0) / 1000
    for index, value in enumerate(buckets):
        entry.buckets[index] += int(value or 0)


def _count_attempts(session: Session) -> dict[tuple[str, str, str], _AttemptTotals]:
    """``attempt_totals`` plus the attempts above the watermark, in one statement.

    The watermark goes in as a value, not a subquery: with a subquery Postgres cannot know
    how few rows lie above it and plans a scan of ``deliveries``. Each row also carries the
    watermark as the statement saw it; if a roll-up moved it after it was read, read again.
    """
    watermark = _read_watermark(session)
    for _ in range(3):
        rolled = select(
            AttemptTotal.channel_type, AttemptTotal.provider, AttemptTotal.delivery_status,
            AttemptTotal.count, AttemptTotal.retries, AttemptTotal.duration_ms,
            *[getattr(AttemptTotal, name) for name in LATENCY_BUCKET_COLUMNS], _rolled_up_to(),
        )
        live = aggregate_attempts(watermark).add_columns(_rolled_up_to())
        rows = session.execute(union_all(rolled, live)).all()
        seen = {int(row[-1]) for row in rows}
        if seen <= {watermark}:
            totals: dict[tuple[str, str, str], _AttemptTotals] = {}
            for row in rows:
                _add_attempt_row(totals, row[:-1])
            return totals
        watermark = max(seen)
    raise RuntimeError("attempt roll-ups moved the watermark during three reads in a row")


def _read_watermark(session: Session) -> int:
    return int(session.scalar(select(_rolled_up_to())) or 0)


def _delivery_families(snapshot: _Snapshot) -> Iterator[Metric]:
    final = CounterMetricFamily(
        "herald_deliveries",
        "Deliveries that reached a final outcome, fleet-wide (rows of the result table)",
        labels=["channel", "status"],
    )
    in_flight = GaugeMetricFamily(
        "herald_deliveries_in_flight",
        "Deliveries not yet final, by their latest status (PENDING: not yet attempted)",
        labels=["channel", "status"],
    )
    for (channel, status, is_final), count in sorted(snapshot.deliveries.items()):
        (final if is_final else in_flight).add_metric([channel, status], count)
    yield final
    yield in_flight
    yield GaugeMetricFamily(
        "herald_deliveries_sending",
        "Deliveries a worker holds right now (leased, provider call under way)",
        value=snapshot.sending,
    )


def _attempt_families(attempts: dict[tuple[str, str, str], _AttemptTotals]) -> Iterator[Metric]:
    counter = CounterMetricFamily(
        "herald_delivery_attempts",
        "Delivery attempts (provider calls and Herald's own decisions), fleet-wide",
        labels=["channel", "provider", "status"],
    )
    retries = CounterMetricFamily(
        "herald_delivery_retries",
        "Delivery attempts after the first (retries of TEMPORARY_FAILURE, THROTTLED, TIMEOUT)",
        labels=["channel", "provider"],
    )
    latency = HistogramMetricFamily(
        "herald_provider_latency_seconds",
        "Duration of provider calls, as measured by the worker that made them",
        labels=["channel", "provider"],
    )
    by_call: dict[tuple[str, str], _AttemptTotals] = {}
    retry_counts: dict[tuple[str, str], int] = {}
    for (channel, provider, status), totals in sorted(attempts.items()):
        counter.add_metric([channel, provider, status], totals.count)
        retry_counts[channel, provider] = retry_counts.get((channel, provider), 0) + totals.retries
        if provider == INTERNAL_PROVIDER:
            continue
        merged = by_call.setdefault((channel, provider), _AttemptTotals())
        merged.count += totals.count
        merged.duration_s += totals.duration_s
        merged.buckets = [a + b for a, b in zip(merged.buckets, totals.buckets, strict=True)]
    for (channel, provider), count in retry_counts.items():
        retries.add_metric([channel, provider], count)
    for (channel, provider), totals in by_call.items():
        buckets = [(_le(bound), float(n)) for bound, n in
                   zip(LATENCY_BUCKETS_S, totals.buckets, strict=True)]
        buckets.append(("+Inf", float(totals.count)))
        latency.add_metric([channel, provider], buckets, sum_value=totals.duration_s)
    yield counter
    yield retries
    yield latency


def _le(bound: float) -> str:
    return repr(float(bound))
