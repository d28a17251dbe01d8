"""Delivery metrics for Prometheus, fleet-wide.

Workers run on many machines and Celery forks pool children, so a counter kept in a worker's
memory shows one process's share and dies with it. The result table already holds every
worker's outcomes (DESIGN.md §5), so the delivery metrics are read from it instead:
:class:`FleetCollector` is a custom collector that any API process's ``/metrics`` runs, and
one scrape target shows the whole fleet. No pushgateway, no worker-side exporter.

- Deliveries by channel and status: one ``GROUP BY`` over ``deliveries``, cached for
  ``HERALD_METRICS_CACHE_S`` (and never re-run sooner than 20 times its own last duration, so a
  large table cannot turn scrapes into load). Final rows never change again, so their count
  is a counter; rows still in flight are a gauge.
- Attempts, retries and provider latency: ``delivery_attempts`` rows are only ever inserted,
  with increasing ids, so each collector folds in just the rows it has not seen — one
  aggregate over a primary-key range per refresh, whatever the table's size. It folds up to
  the highest id seen at the *previous* refresh, so a transaction that took its ids before
  then has had a whole cache period to commit (ids are handed out before commit).
- Queue depth: ``LLEN`` of the Celery queue on a Redis broker.

Every API process reports the same fleet numbers: aggregate them with ``max``, not ``sum``.
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
from sqlalchemy import case, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from worker.db import utcnow
from worker.models import Delivery, DeliveryAttempt

log = structlog.get_logger("herald.metrics")

# Provider call latency buckets, in seconds: push answers in tens of ms, SMTP and Twilio in
# hundreds, a provider near its timeout (HERALD_PROVIDER_TIMEOUT_S, 10 s) in the top buckets.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Outcomes Herald decided itself (render errors, channel disabled): attempts, not provider calls.
INTERNAL_PROVIDER = "herald"
PENDING = "PENDING"  # a row not yet attempted has no DeliveryStatus
# kombu's Redis transport keeps priority levels as separate lists beside the queue's own.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
_STATEMENT_TIMEOUT_MS = 5000

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
        queue: str = "herald",
        cache_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._queue = queue
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot = _Snapshot()
        self._attempts: dict[tuple[str, str, str], _AttemptTotals] = {}
        self._folded_upto = 0  # attempt ids <= this are in self._attempts
        self._horizon: int | None = None  # the highest attempt id seen at the last refresh
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
                    self._fold_attempts(session)
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

    def _fold_attempts(self, session: Session) -> None:
        highest = session.scalar(select(func.max(DeliveryAttempt.id))) or 0
        # First refresh: take everything there is. Later: up to the previous refresh's highest
        # id, so rows whose transaction was still open then are not skipped for good.
        upto = highest if self._horizon is None else min(self._horizon, highest)
        self._horizon = highest
        if upto <= self._folded_upto:
            return
        for row in _aggregate_attempts(session, self._folded_upto, upto):
            channel, provider, status, count, retries, duration_ms, *buckets = row
            key = (channel or "", provider, status)
            totals = self._attempts.setdefault(key, _AttemptTotals())
            totals.count += int(count)
            totals.retries += int(retries or 0)
            totals.duration_s += float(duration_ms or 0) / 1000
            for index, value in enumerate(buckets):
                totals.buckets[index] += int(value or 0)
        self._folded_upto = upto

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
            attempts = {key: _copy(totals) for key, totals in self._attempts.items()}
            errors = self._errors
        yield from _delivery_families(snapshot)
        yield from _attempt_families(attempts)
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


def _copy(totals: _AttemptTotals) -> _AttemptTotals:
    return _AttemptTotals(totals.count, totals.retries, totals.duration_s, list(totals.buckets))


def _count_deliveries(session: Session) -> tuple[dict[tuple[str, str, bool], int], int]:
    now = utcnow()
    rows = session.execute(
        select(
            Delivery.channel_type,
            Delivery.delivery_status,
            Delivery.final,
            func.count(),
            func.sum(case((Delivery.lease_until > now, 1), else_=0)),
        ).group_by(Delivery.channel_type, Delivery.delivery_status, Delivery.final)
    )
    counts: dict[tuple[str, str, bool], int] = {}
    sending = 0
    for channel, status, final, count, leased in rows:
        key = (channel or "", status or PENDING, bool(final))
        counts[key] = counts.get(key, 0) + int(count)
        if not final:
            sending += int(leased or 0)
    return counts, sending


def _aggregate_attempts(session: Session, after: int, upto: int) -> Iterable[Sequence[Any]]:
    """Attempts with ids in (after, upto], summed by (channel, provider, status), with the
    cumulative latency bucket counts computed by the database."""
    duration = DeliveryAttempt.duration_ms
    bucket_columns = [
        func.sum(case((duration <= bound * 1000, 1), else_=0)) for bound in LATENCY_BUCKETS_S
    ]
    return session.execute(
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
        .where(DeliveryAttempt.id > after, DeliveryAttempt.id <= upto)
        .group_by(Delivery.channel_type, DeliveryAttempt.provider, DeliveryAttempt.delivery_status)
    ).all()


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
