"""Delivering one batch of a request: claim, render, send concurrently, record, retry.

:func:`deliver_batch` is the plain function behind the Celery task (and the embedded
worker). It takes only ids, so a task delivered twice, or re-enqueued by the recovery sweep,
does no double work: rows are claimed with a lease in one UPDATE, final rows are never
claimed, and an expired lease (a worker that died mid-send) is the only way a row is sent
again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Row, Text, and_, cast, func, insert, or_, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from worker import wire
from worker.core.config import Settings
from worker.core.db import utcnow
from worker.core.models import Delivery, DeliveryAttempt, Endpoint, SendRequest
from worker.core.outages import DATABASE, database_unreachable
from worker.core.vocabulary import (
    INTERNAL_PROVIDER,
    ChannelConfig,
    DeliveryStatus,
    Outcome,
    OutgoingMessage,
)
from worker.delivery.render_limits import (
    MAX_BATCH_RENDERED_CHARS,
    RenderBudget,
    RenderLimitExceeded,
)
from worker.delivery.rendering import Recipient, RenderError, render
from worker.intake.accept import delivery_uuid
from worker.intake.otp import unseal
from worker.management.channels import ChannelCache
from worker.providers.base import Provider

log = structlog.get_logger("herald.delivery")

MAX_CONCURRENT_SENDS = 200
FLUSH_INTERVAL_S = 0.05
# Writing outcomes while the database is away: retry soon, then every second at most, so a
# worker records what it holds within a second of the database's return — well inside the
# recovery sweep's settling time (worker.delivery.recovery.Sweeper).
WRITE_RETRY_FIRST_S = 0.1
WRITE_RETRY_MAX_S = 1.0
# Tolerance for a task that arrives a little before its countdown (clock skew, eta jitter).
EARLY_SLACK = timedelta(seconds=1)
# Claims without a recorded outcome after which a row is quarantined (see _quarantined).
QUARANTINE_AFTER = 3


# A send request's payload as parsed: which operation it came from decides the overrides.
SendPayload = wire.SendUsersMessageRequest | wire.MessageRequest


@dataclass(frozen=True)
class Retry:
    delay_s: float
    ids: list[int]


@dataclass(frozen=True, slots=True)
class Attempted:
    """One send as it is recorded: its outcome, which provider made it, when, how long."""

    outcome: Outcome
    provider: str  # Provider.name, or INTERNAL_PROVIDER when Herald refused before sending
    started: float  # time.time() when the send began
    duration_ms: float


@dataclass
class BatchReport:
    claimed: int = 0
    final: int = 0
    retries: list[Retry] | None = None


def backoff_delay(settings: Settings, attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; never sooner than the provider's Retry-After."""
    ceiling = min(settings.retry_max_delay_s, settings.retry_base_delay_s * 2 ** (attempt - 1))
    delay = random.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.retry_max_delay_s))
    return delay


class RequestCache:
    """Parsed request payloads by id; a request's batches usually land on the same worker.

    Least recently used first out, bounded by the stored payloads' size as well as their
    number: a request may be 7 MiB, so 256 of them could hold gigabytes per pool process."""

    def __init__(self, size: int = 256, max_chars: int = 32 * 1024 * 1024) -> None:
        self._size = size
        self._max_chars = max_chars
        self._chars = 0
        self._entries: OrderedDict[str, tuple[SendRequest, SendPayload, int]] = OrderedDict()

    def get(self, session: Session, request_id: str) -> tuple[SendRequest, SendPayload] | None:
        entry = self._entries.get(request_id)
        if entry is not None:
            self._entries.move_to_end(request_id)
            return entry[0], entry[1]
        found = session.execute(
            select(SendRequest, func.length(cast(SendRequest.payload, Text)))
            .where(SendRequest.id == request_id)
        ).first()
        if found is None:
            return None
        request, chars = found[0], int(found[1] or 0)
        model = wire.SendUsersMessageRequest if request.kind == "users" else wire.MessageRequest
        parsed: SendPayload = model.model_validate(request.payload)
        self._keep(request_id, (request, parsed, chars))
        return request, parsed

    def _keep(self, request_id: str, entry: tuple[SendRequest, SendPayload, int]) -> None:
        chars = entry[2]
        if chars > self._max_chars:
            return  # used once, not kept
        while self._entries and (
            len(self._entries) >= self._size or self._chars + chars > self._max_chars
        ):
            _, evicted = self._entries.popitem(last=False)
            self._chars -= evicted[2]
        self._entries[request_id] = entry
        self._chars += chars

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._entries

    @property
    def chars(self) -> int:
        """The stored size of the payloads held (JSON characters)."""
        return self._chars


@dataclass
class Runtime:
    """What one worker process keeps between batches: settings, providers, caches, loop."""

    settings: Settings
    sessions: sessionmaker[Session]
    providers: Callable[[str], Provider]
    loop: asyncio.AbstractEventLoop
    channels: ChannelCache
    requests: RequestCache
    notify: Callable[[str], None]
    lease_s: float = 60.0
    # Rendered characters one batch may hold before sending; the rest wait for a batch of
    # their own (issue 14).
    batch_render_chars: int = MAX_BATCH_RENDERED_CHARS


# What a worker needs of a claimed row, as a plain row rather than an ORM object.
_CLAIMED = (
    Delivery.id, Delivery.request_id, Delivery.app_id, Delivery.recipient, Delivery.user_id,
    Delivery.endpoint_id, Delivery.channel_type, Delivery.address, Delivery.attempts,
)
Claimed = Row[*tuple[Any, ...]]


def _claim(session: Session, ids: list[int], lease_s: float) -> list[Claimed]:
    now = utcnow()
    claimed = session.execute(
        update(Delivery)
        .where(
            Delivery.id.in_(ids),
            Delivery.final.is_(False),
            or_(Delivery.lease_until.is_(None), Delivery.lease_until < now),
            or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now + EARLY_SLACK),
        )
        .values(
            lease_until=now + timedelta(seconds=lease_s),
            attempts=Delivery.attempts + 1,
            updated_at=now,
        )
        .returning(*_CLAIMED)
    )
    return list(claimed.all())


def _quarantined(session: Session, rows: list[Claimed]) -> dict[int, Outcome]:
    """Rows that were in flight in QUARANTINE_AFTER workers that died, with their outcome.

    A claim adds one to ``attempts``; an outcome adds a ``delivery_attempts`` row. A claim
    with no outcome was held by a worker that died (or lost its database) before recording.
    DESIGN.md §4 allows one repeat of such a send; a row that keeps taking its worker down
    with it — a poison pill — is made final instead of claimed again, so no input can take
    down the whole fleet one worker after another."""
    suspects = {row.id: row.attempts for row in rows if row.attempts > QUARANTINE_AFTER}
    if not suspects:
        return {}
    recorded: dict[int, int] = {
        delivery_id: count for delivery_id, count in session.execute(
            select(DeliveryAttempt.delivery_id, func.count())
            .where(DeliveryAttempt.delivery_id.in_(suspects))
            .group_by(DeliveryAttempt.delivery_id)
        )
    }
    quarantined: dict[int, Outcome] = {}
    for row_id, attempts in suspects.items():
        # ``attempts`` counts this claim too.
        unrecorded = attempts - 1 - recorded.get(row_id, 0)
        if unrecorded >= QUARANTINE_AFTER:
            quarantined[row_id] = Outcome(
                DeliveryStatus.PERMANENT_FAILURE, 500,
                f"Quarantined: this delivery was being prepared or sent by a worker that "
                f"died {unrecorded} times",
            )
    return quarantined


def _overrides(payload: SendPayload, row: Claimed) -> wire.EndpointSendConfiguration | None:
    if isinstance(payload, wire.SendUsersMessageRequest):
        return payload.users.get(row.user_id or "")
    if row.endpoint_id is not None:
        return (payload.endpoints or {}).get(row.endpoint_id)
    return (payload.addresses or {}).get(row.address or "")


def _prepare(
    runtime: Runtime, session: Session, rows: list[Claimed]
) -> tuple[dict[int, tuple[OutgoingMessage, ChannelConfig] | Outcome], list[int]]:
    """Render every claimed row: a message to send, or a final outcome. Rows past the
    batch's rendering budget are not rendered; their ids come back to be deferred."""
    prepared: dict[int, tuple[OutgoingMessage, ChannelConfig] | Outcome] = {}
    deferred: list[int] = []
    if not rows:
        return prepared, deferred
    entry = runtime.requests.get(session, rows[0].request_id)
    if entry is None:
        for row in rows:
            prepared[row.id] = Outcome(DeliveryStatus.PERMANENT_FAILURE, 404, "Request deleted.")
        return prepared, deferred
    request, payload = entry
    if request.sealed_substitutions is not None and isinstance(payload, wire.MessageRequest):
        # A one-time password: decrypted for this batch's rendering only, never cached.
        payload = unseal(payload, request.sealed_substitutions, runtime.settings)
    channels = runtime.channels.for_app(session, request.app_id)
    endpoint_ids = [r.endpoint_id for r in rows if r.endpoint_id]
    documents: dict[str, dict[str, Any]] = {}
    if endpoint_ids:
        documents = {
            endpoint_id: document for endpoint_id, document in session.execute(
                select(Endpoint.id, Endpoint.document).where(
                    Endpoint.app_id == request.app_id, Endpoint.id.in_(endpoint_ids)
                )
            )
        }
    # A batch holds its rendered messages until they are sent: bound what it holds, so that
    # a batch of large messages costs a bounded amount of memory, not batch size × 10 MiB.
    held = 0
    for row in rows:
        if deferred:
            deferred.append(row.id)
            continue
        budget = RenderBudget()
        # Whatever goes wrong preparing one row — a bug, an input nobody foresaw, even a
        # MemoryError — is that row's final outcome; the rest of the batch goes on, and the
        # worker lives to take the next task.
        try:
            item = _prepare_one(
                runtime, payload, channels.get(row.channel_type or ""), row,
                documents.get(row.endpoint_id or ""), budget,
            )
        except Exception as exc:
            log.exception(
                "could not prepare a delivery", app_id=row.app_id, request_id=row.request_id,
                delivery_id=row.id, endpoint_id=row.endpoint_id, error=type(exc).__name__,
            )
            item = Outcome(
                DeliveryStatus.PERMANENT_FAILURE, 500,
                f"Herald could not prepare this message ({type(exc).__name__}); "
                "it will not be retried",
            )
        if isinstance(item, tuple) and held and held + budget.chars > runtime.batch_render_chars:
            deferred.append(row.id)  # the first message always fits: each batch progresses
            continue
        held += budget.chars if isinstance(item, tuple) else 0
        prepared[row.id] = item
    return prepared, deferred


def _prepare_one(
    runtime: Runtime,
    payload: SendPayload,
    channel: ChannelConfig | None,
    row: Claimed,
    document: dict[str, Any] | None,
    budget: RenderBudget,
) -> tuple[OutgoingMessage, ChannelConfig] | Outcome:
    channel_type = row.channel_type or ""
    if channel is None or not channel.enabled:
        return Outcome(
            DeliveryStatus.PERMANENT_FAILURE, 400,
            f"The {channel_type} channel is not enabled for this application.",
        )
    recipient = Recipient(
        channel_type=channel_type,
        address=row.address or "",
        endpoint_id=row.endpoint_id,
        user_id=row.user_id,
        document=document,
    )
    try:
        content = render(
            payload.message_configuration,
            recipient,
            channel,
            overrides=_overrides(payload, row),
            context=payload.context,
            default_origination_number=runtime.settings.default_origination_number,
            budget=budget,
        )
    except RenderLimitExceeded as exc:
        log.warning("message over its rendering budget", app_id=row.app_id,
                    request_id=row.request_id, endpoint_id=row.endpoint_id, reason=str(exc))
        return Outcome(DeliveryStatus.PERMANENT_FAILURE, 400, str(exc))
    except RenderError as exc:
        return Outcome(DeliveryStatus.PERMANENT_FAILURE, 400, str(exc))
    message = OutgoingMessage(
        delivery_id=delivery_uuid(row.request_id, row.recipient),
        channel_type=channel_type,
        address=row.address or "",
        content=content,
        attempt=row.attempts,
    )
    return message, channel


async def _send_and_record(
    runtime: Runtime,
    rows: dict[int, Claimed],
    work: dict[int, tuple[OutgoingMessage, ChannelConfig]],
    created: datetime | None,
) -> BatchReport:
    """Send concurrently, writing outcomes as they arrive (every FLUSH_INTERVAL_S) on a
    thread while sends go on. A worker that dies mid-batch then leaves only the sends still
    in flight — not a whole batch of sent-but-unrecorded messages — to be repeated."""
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(MAX_CONCURRENT_SENDS)
    # A provider must honour its own timeout; this bound only catches a provider that does not.
    guard = runtime.settings.provider_timeout_s + 5
    done: list[tuple[int, Attempted]] = []
    report = BatchReport(claimed=len(rows), retries=[])

    async def one(row_id: int, message: OutgoingMessage, channel: ChannelConfig) -> None:
        provider = runtime.providers(message.channel_type)
        async with limit:
            started = time.time()
            began = time.perf_counter()
            try:
                async with asyncio.timeout(guard):
                    outcome = await provider.send(message, channel)
            except TimeoutError:
                outcome = Outcome(DeliveryStatus.TIMEOUT, 504, "Provider did not answer in time")
            except Exception:
                log.exception("provider raised", provider=provider.name, delivery_id=row_id)
                outcome = Outcome(
                    DeliveryStatus.TEMPORARY_FAILURE, 500, "Internal error in the provider adapter"
                )
            done.append((row_id, Attempted(outcome, provider.name, started,
                                           (time.perf_counter() - began) * 1000)))

    written: set[int] = set()

    async def flush() -> None:
        if not done:
            return
        chunk = dict(done)
        done.clear()
        part, waited = await loop.run_in_executor(
            None, write_outcomes, runtime, [rows[i] for i in chunk], chunk, created
        )
        written.update(chunk)
        report.final += part.final
        assert report.retries is not None
        report.retries.extend(part.retries or ())
        if waited:
            # The database was away, maybe for longer than a lease: hold on to the rows still
            # being sent, so that no sweep hands them to another worker.
            unwritten = written | {i for i, _ in done}
            sending_now = [i for i in work if i not in unwritten]
            await loop.run_in_executor(None, _renew_leases, runtime, sending_now)

    sending = asyncio.ensure_future(
        asyncio.gather(*(one(i, m, c) for i, (m, c) in work.items()))
    )
    while not sending.done():
        await asyncio.wait({sending}, timeout=FLUSH_INTERVAL_S)
        await flush()
    await sending
    await flush()
    return report


def write_outcomes(
    runtime: Runtime,
    rows: list[Claimed],
    outcomes: dict[int, Attempted],
    created: datetime | None,
) -> tuple[BatchReport, bool]:
    """Record outcomes, holding them through a database outage for as long as it lasts.

    Giving up would leave rows that were really sent to the recovery sweep, which sends them
    again (DESIGN.md §4 allows a repeat only for a worker that died). Returns the report and
    whether the database was away meanwhile.
    """
    delay = WRITE_RETRY_FIRST_S
    waited = False
    while True:
        try:
            with runtime.sessions() as session, session.begin():
                report = _record(runtime, session, rows, outcomes, created)
        except Exception as exc:
            if not database_unreachable(exc):
                raise
            DATABASE.lost(exc)
            waited = True
            time.sleep(delay)
            delay = min(delay * 2, WRITE_RETRY_MAX_S)
            continue
        DATABASE.back()
        runtime.notify(rows[0].request_id)
        return report, waited


def _renew_leases(runtime: Runtime, ids: list[int]) -> None:
    if not ids:
        return
    now = utcnow()
    try:
        with runtime.sessions() as session, session.begin():
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids), Delivery.final.is_(False))
                .values(lease_until=now + timedelta(seconds=runtime.lease_s))
            )
    except Exception as exc:  # gone again: the outcomes, when they come, are held as above
        if not database_unreachable(exc):
            raise
        DATABASE.lost(exc)


# One statement for a whole flush on Postgres: the rows' new values travel as arrays.
_UPDATE_FROM_ARRAYS = text("""
UPDATE deliveries AS d SET
    delivery_status = v.delivery_status, status_code = v.status_code,
    status_message = v.status_message, message_id = v.message_id,
    updated_token = v.updated_token, final = v.final, final_at = v.final_at,
    next_attempt_at = v.next_attempt_at, lease_until = NULL, updated_at = v.updated_at
FROM unnest(
    CAST(:id AS bigint[]), CAST(:delivery_status AS varchar[]), CAST(:status_code AS int[]),
    CAST(:status_message AS text[]), CAST(:message_id AS text[]),
    CAST(:updated_token AS text[]), CAST(:final AS boolean[]), CAST(:final_at AS timestamptz[]),
    CAST(:next_attempt_at AS timestamptz[]), CAST(:updated_at AS timestamptz[])
) AS v(id, delivery_status, status_code, status_message, message_id, updated_token, final,
       final_at, next_attempt_at, updated_at)
WHERE d.id = v.id
""")


def _update_outcomes(session: Session, updates: list[dict[str, Any]]) -> None:
    if session.get_bind().dialect.name != "postgresql":
        session.execute(update(Delivery), updates)  # executemany by primary key
        return
    columns = [key for key in updates[0] if key != "lease_until"]
    session.execute(_UPDATE_FROM_ARRAYS, {c: [u[c] for u in updates] for c in columns})


def _record(
    runtime: Runtime,
    session: Session,
    rows: list[Claimed],
    outcomes: dict[int, Attempted],
    request_created: datetime | None,
) -> BatchReport:
    settings = runtime.settings
    now = utcnow()
    report = BatchReport(claimed=len(rows))
    updates: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    retry_groups: dict[float, list[int]] = defaultdict(list)
    deactivate: list[str] = []
    new_addresses: list[tuple[str, str]] = []
    for row in rows:
        attempted = outcomes[row.id]
        outcome, provider, duration = attempted.outcome, attempted.provider, attempted.duration_ms
        age = (now - request_created).total_seconds() if request_created else 0.0
        retry = outcome.status.retryable and row.attempts < settings.retry_max_attempts
        delay = backoff_delay(settings, row.attempts, outcome.retry_after) if retry else 0.0
        if retry and age + delay > settings.retry_max_age_s:
            retry = False
        updates.append({
            "id": row.id,
            "delivery_status": outcome.status.value,
            "status_code": outcome.status_code,
            "status_message": outcome.status_message,
            "message_id": outcome.message_id,
            "updated_token": outcome.updated_token,
            "final": not retry,
            "final_at": None if retry else now,
            "next_attempt_at": now + timedelta(seconds=delay) if retry else None,
            "lease_until": None,
            "updated_at": now,
        })
        attempts.append({
            "delivery_id": row.id,
            "attempt": row.attempts,
            "provider": provider,
            "delivery_status": outcome.status.value,
            "status_code": outcome.status_code,
            "status_message": outcome.status_message,
            "message_id": outcome.message_id,
            "started_at": datetime.fromtimestamp(attempted.started, now.tzinfo),
            "duration_ms": duration,
        })
        if retry:
            retry_groups[round(delay, 1)].append(row.id)
        else:
            report.final += 1
        if row.endpoint_id and outcome.deactivate_endpoint:
            deactivate.append(row.endpoint_id)
        if row.endpoint_id and outcome.updated_token and outcome.updated_token != row.address:
            new_addresses.append((row.endpoint_id, outcome.updated_token))
        log.info(
            "delivery attempt",
            app_id=row.app_id, request_id=row.request_id, user_id=row.user_id,
            endpoint_id=row.endpoint_id, channel=row.channel_type, status=outcome.status.value,
            provider=provider, provider_code=outcome.status_code, attempt=row.attempts,
            duration_ms=round(duration, 1), retry_in_s=round(delay, 2) if retry else None,
        )
    _update_outcomes(session, updates)
    session.execute(insert(DeliveryAttempt), attempts)
    app_id = rows[0].app_id
    if deactivate:
        session.execute(
            update(Endpoint)
            .where(Endpoint.app_id == app_id, Endpoint.id.in_(deactivate))
            .values(status="INACTIVE", updated_at=now)
        )
    for endpoint_id, address in new_addresses:
        session.execute(
            update(Endpoint)
            .where(and_(Endpoint.app_id == app_id, Endpoint.id == endpoint_id))
            .values(address=address, updated_at=now)
        )
    report.retries = [Retry(delay, ids) for delay, ids in sorted(retry_groups.items())]
    return report


def _release(runtime: Runtime, ids: list[int]) -> None:
    """Hand back rows claimed but not tried (deferred to a batch of their own): the claim is
    undone, so it neither counts as an attempt nor as a claim lost in a dead worker."""
    now = utcnow()
    with runtime.sessions() as session, session.begin():
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(lease_until=None, attempts=Delivery.attempts - 1, next_attempt_at=now,
                    updated_at=now)
        )


def deliver_batch(runtime: Runtime, request_id: str, ids: list[int]) -> BatchReport:
    """Claim, render, send and record one batch. Returns what must be retried, and when."""
    with runtime.sessions() as session, session.begin():
        rows = _claim(session, ids, runtime.lease_s)
        quarantined = _quarantined(session, rows)
    if not rows:
        return BatchReport()
    for row_id, outcome in quarantined.items():
        log.error("delivery quarantined", request_id=request_id, delivery_id=row_id,
                  reason=outcome.status_message)
    with runtime.sessions() as session:
        prepared, deferred = _prepare(
            runtime, session, [r for r in rows if r.id not in quarantined]
        )
        entry = runtime.requests.get(session, request_id)
    prepared.update(quarantined)
    created = entry[0].created_at if entry else None
    if created is not None and created.tzinfo is None:
        created = created.replace(tzinfo=utcnow().tzinfo)
    by_id = {row.id: row for row in rows}
    refused = {
        row_id: Attempted(item, INTERNAL_PROVIDER, time.time(), 0.0)
        for row_id, item in prepared.items()
        if isinstance(item, Outcome)
    }
    report = BatchReport(claimed=len(rows), retries=[])
    if refused:
        report, _ = write_outcomes(runtime, [by_id[i] for i in refused], refused, created)
        report.claimed = len(rows)
    if deferred:
        _release(runtime, deferred)
        assert report.retries is not None
        report.retries.append(Retry(0.0, deferred))
    work = {i: p for i, p in prepared.items() if isinstance(p, tuple)}
    if work:
        sent = runtime.loop.run_until_complete(_send_and_record(runtime, by_id, work, created))
        report.final += sent.final
        assert report.retries is not None
        report.retries.extend(sent.retries or ())
    return report
