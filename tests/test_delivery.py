"""The delivery functions called directly against real Postgres, with a scripted provider:
claiming, recording, retry versus final, dead tokens, canonical tokens, the recovery sweep,
and what a worker does while the database is away. (The end-to-end tier drives the same code
through boto3 and live processes.)"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from tests.stack import SECRET_KEY, create_database, drop_database
from worker import wire
from worker.core.config import Settings
from worker.core.db import make_engine, utcnow
from worker.core.migrate import upgrade
from worker.core.models import Delivery, DeliveryAttempt, Endpoint, RollupState
from worker.core.outages import DATABASE
from worker.core.vocabulary import ChannelConfig, DeliveryStatus, Outcome, OutgoingMessage
from worker.delivery.batch import (
    Attempted,
    RequestCache,
    Runtime,
    deliver_batch,
    write_outcomes,
)
from worker.delivery.recovery import Housekeeping, Sweeper, sweep
from worker.intake.accept import Accepted, accept_users_request
from worker.management.applications import create_application
from worker.management.channels import ChannelCache, update_channel
from worker.management.endpoints import upsert_endpoints

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1"

SETTINGS = Settings(secret_key=SECRET_KEY)  # the keys channel credentials are stored with


class ScriptedProvider:
    """Answers each address with the outcomes scripted for it, in order (the last repeats)."""

    name = "scripted"

    def __init__(self, script: dict[str, list[Outcome]] | None = None) -> None:
        self.script = script or {}
        self.sent: list[str] = []

    async def send(self, delivery: OutgoingMessage, channel: ChannelConfig) -> Outcome:
        self.sent.append(delivery.address)
        outcomes = self.script.get(delivery.address) or [Outcome(DeliveryStatus.SUCCESSFUL, 200)]
        return outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]

    async def aclose(self) -> None:
        return None


class Switchable:
    """A session factory whose database can be taken away and given back."""

    def __init__(self, live: sessionmaker[Session]) -> None:
        self.live = live
        self.dead = sessionmaker(make_engine(UNREACHABLE))
        self.away = False

    def __call__(self) -> Session:
        return (self.dead if self.away else self.live)()


@pytest.fixture
def database() -> Iterator[str]:
    name = f"herald_test_delivery_{uuid.uuid4().hex[:6]}"
    url = create_database(name)
    upgrade(Settings(database_url=url, secret_key=SECRET_KEY))
    yield url
    drop_database(name)


@pytest.fixture
def sessions(database: str) -> sessionmaker[Session]:
    return sessionmaker(make_engine(database), expire_on_commit=False)


def runtime_for(sessions: Any, provider: ScriptedProvider, **settings: Any) -> Runtime:
    return Runtime(
        settings=Settings(secret_key=SECRET_KEY, retry_base_delay_s=0.01, **settings),
        sessions=sessions,
        providers=lambda _channel_type: provider,  # type: ignore[arg-type,return-value]
        loop=asyncio.new_event_loop(),
        channels=ChannelCache(SETTINGS),
        requests=RequestCache(),
        notify=lambda _request_id: None,
        lease_s=60,
    )


def accepted_send(sessions: sessionmaker[Session], phones: list[str]) -> Accepted:
    """An app with SMS endpoints, one user each, and a send to all of them, as intake
    leaves it: rows committed, none claimed."""
    with sessions() as session, session.begin():
        app_id = create_application(session, wire.CreateApplicationRequest(name="t")).id
        update_channel(session, app_id, "sms", {"Enabled": True}, SETTINGS)
        upsert_endpoints(session, app_id, [
            (f"e{i}", wire.EndpointRequest.model_validate({
                "ChannelType": "SMS", "Address": phone, "User": {"UserId": f"u{i}"}}))
            for i, phone in enumerate(phones)
        ])
    payload = {"MessageConfiguration": {"SMSMessage": {"Body": "hi {{User.UserId}}"}},
               "Users": {f"u{i}": {} for i in range(len(phones))}}
    with sessions() as session, session.begin():
        return accept_users_request(
            session, app_id, wire.SendUsersMessageRequest.model_validate(payload), payload,
            ChannelCache(SETTINGS), SETTINGS)


def rows(sessions: sessionmaker[Session], request_id: str) -> dict[str, Any]:
    with sessions() as session:
        found = session.execute(select(Delivery).where(Delivery.request_id == request_id))
        return {row.address: row for row in found.scalars()}


def phones(count: int) -> list[str]:
    return [f"+1555010{n:04d}" for n in range(count)]


# --- claim, send, record -----------------------------------------------------------------------


def test_a_batch_is_sent_recorded_and_never_sent_again(sessions: sessionmaker[Session]) -> None:
    provider = ScriptedProvider()
    runtime = runtime_for(sessions, provider)
    accepted = accepted_send(sessions, phones(3))
    report = deliver_batch(runtime, accepted.request_id, accepted.pending)
    assert (report.claimed, report.final, report.retries) == (3, 3, [])
    found = rows(sessions, accepted.request_id)
    assert {r.delivery_status for r in found.values()} == {"SUCCESSFUL"}
    assert all(r.final and r.attempts == 1 and r.lease_until is None for r in found.values())
    # The same task delivered twice (a broker redelivery, a sweep): nothing is claimed.
    again = deliver_batch(runtime, accepted.request_id, accepted.pending)
    assert again.claimed == 0 and len(provider.sent) == 3


def test_a_row_leased_by_another_worker_is_not_claimed(sessions: sessionmaker[Session]) -> None:
    provider = ScriptedProvider()
    accepted = accepted_send(sessions, phones(2))
    held = accepted.pending[0]
    with sessions() as session, session.begin():
        session.execute(update(Delivery).where(Delivery.id == held)
                        .values(lease_until=utcnow() + timedelta(seconds=60)))
    report = deliver_batch(runtime_for(sessions, provider), accepted.request_id, accepted.pending)
    assert report.claimed == 1 and len(provider.sent) == 1


def test_retryable_outcomes_retry_until_the_attempts_run_out(
    sessions: sessionmaker[Session],
) -> None:
    busy = Outcome(DeliveryStatus.THROTTLED, 429, "slow down", retry_after=0.0)
    [flaky, hopeless] = phones(2)
    provider = ScriptedProvider({
        flaky: [Outcome(DeliveryStatus.TEMPORARY_FAILURE, 503), Outcome(DeliveryStatus.SUCCESSFUL,
                                                                        200)],
        hopeless: [busy],
    })
    runtime = runtime_for(sessions, provider, retry_max_attempts=3)
    accepted = accepted_send(sessions, [flaky, hopeless])
    ids = list(accepted.pending)
    for attempt in (1, 2, 3):
        report = deliver_batch(runtime, accepted.request_id, ids)
        found = rows(sessions, accepted.request_id)
        if attempt == 1:
            assert not found[flaky].final and found[flaky].next_attempt_at is not None
            assert [r.ids for r in report.retries or ()] != []
        time.sleep(0.05)  # past the (tiny) backoff
    found = rows(sessions, accepted.request_id)
    assert (found[flaky].delivery_status, found[flaky].final, found[flaky].attempts) == (
        "SUCCESSFUL", True, 2)
    assert (found[hopeless].delivery_status, found[hopeless].final,
            found[hopeless].attempts) == ("THROTTLED", True, 3)
    with sessions() as session:
        attempts = session.scalars(select(DeliveryAttempt.delivery_status).where(
            DeliveryAttempt.delivery_id == found[hopeless].id)).all()
    assert attempts == ["THROTTLED"] * 3  # every attempt is kept


def test_a_dead_token_deactivates_and_a_canonical_token_updates_the_endpoint(
    sessions: sessionmaker[Session],
) -> None:
    [dead, moved] = phones(2)
    provider = ScriptedProvider({
        dead: [Outcome(DeliveryStatus.PERMANENT_FAILURE, 400, "unregistered",
                       deactivate_endpoint=True)],
        moved: [Outcome(DeliveryStatus.SUCCESSFUL, 200, updated_token="+15550109999")],
    })
    accepted = accepted_send(sessions, [dead, moved])
    deliver_batch(runtime_for(sessions, provider), accepted.request_id, accepted.pending)
    found = rows(sessions, accepted.request_id)
    assert found[moved].updated_token == "+15550109999"
    with sessions() as session:
        endpoints = {e.id: e for e in session.scalars(select(Endpoint).where(
            Endpoint.app_id == found[dead].app_id))}
    assert endpoints["e0"].status == "INACTIVE"
    assert endpoints["e1"].address == "+15550109999" and endpoints["e1"].status == "ACTIVE"


# --- the recovery sweep ------------------------------------------------------------------------


def test_the_sweep_hands_out_expired_leases_and_overdue_rows_once(
    sessions: sessionmaker[Session],
) -> None:
    accepted = accepted_send(sessions, phones(3))
    [expired, overdue, fresh] = accepted.pending
    past = utcnow() - timedelta(minutes=5)
    with sessions() as session, session.begin():
        session.execute(update(Delivery).where(Delivery.id == expired)
                        .values(lease_until=past, attempts=1))
        session.execute(update(Delivery).where(Delivery.id == overdue)
                        .values(next_attempt_at=past))
        session.execute(update(Delivery).where(Delivery.id == fresh)
                        .values(next_attempt_at=utcnow()))
    handed: list[int] = []
    found = sweep(sessions, lambda _r, ids: handed.extend(ids), grace_s=30, batch_size=100)
    assert found == 2 and sorted(handed) == sorted([expired, overdue])
    # Due now, so the next sweep leaves them alone for another grace period.
    assert sweep(sessions, lambda _r, ids: handed.extend(ids), grace_s=30, batch_size=100) == 0


def test_after_a_database_outage_the_sweep_waits_for_live_workers_to_write(
    sessions: sessionmaker[Session],
) -> None:
    accepted = accepted_send(sessions, phones(1))
    with sessions() as session, session.begin():  # a lease that ran out during the outage
        session.execute(update(Delivery).where(Delivery.id.in_(accepted.pending))
                        .values(lease_until=utcnow() - timedelta(seconds=30), attempts=1))
    database = Switchable(sessions)
    now = [0.0]
    handed: list[int] = []
    sweeper = Sweeper(database, lambda _r, ids: handed.extend(ids),  # type: ignore[arg-type]
                      grace_s=2, batch_size=100, clock=lambda: now[0])
    database.away = True
    assert sweeper.tick() == 0 and DATABASE.down
    database.away = False
    assert sweeper.tick() == 0 and not DATABASE.down  # back, but settling
    now[0] += sweeper.settle_s - 0.1
    assert sweeper.tick() == 0 and handed == []
    now[0] += 0.2
    assert sweeper.tick() == 1 and handed == accepted.pending


# --- a worker while the database is away -------------------------------------------------------


def test_outcomes_in_hand_are_written_when_the_database_is_back(
    sessions: sessionmaker[Session],
) -> None:
    accepted = accepted_send(sessions, phones(2))
    database = Switchable(sessions)
    runtime = runtime_for(database, ScriptedProvider())
    with sessions() as session, session.begin():
        claimed = session.execute(
            update(Delivery).where(Delivery.id.in_(accepted.pending))
            .values(lease_until=utcnow() + timedelta(seconds=60), attempts=1)
            .returning(Delivery.id, Delivery.request_id, Delivery.app_id, Delivery.recipient,
                       Delivery.user_id, Delivery.endpoint_id, Delivery.channel_type,
                       Delivery.address, Delivery.attempts)).all()
    outcomes = {row.id: Attempted(Outcome(DeliveryStatus.SUCCESSFUL, 200), "scripted", time.time(),
                                5.0)
                for row in claimed}
    database.away = True
    result: dict[str, Any] = {}
    writer = threading.Thread(target=lambda: result.update(
        done=write_outcomes(runtime, list(claimed), outcomes, None)))
    writer.start()
    time.sleep(1.5)
    assert writer.is_alive() and "done" not in result  # holding, not giving up
    assert not any(r.final for r in rows(sessions, accepted.request_id).values())
    database.away = False
    writer.join(10)
    report, waited = result["done"]
    assert waited and report.final == 2
    assert all(r.final and r.delivery_status == "SUCCESSFUL"
               for r in rows(sessions, accepted.request_id).values())


def test_housekeeping_sweeps_every_tick_and_runs_retention_on_its_schedule(
    sessions: sessionmaker[Session],
) -> None:
    accepted = accepted_send(sessions, phones(1))
    with sessions() as session, session.begin():  # abandoned by a worker that died
        session.execute(update(Delivery).where(Delivery.id.in_(accepted.pending))
                        .values(lease_until=utcnow() - timedelta(minutes=5), attempts=1))
    now = [0.0]
    handed: list[int] = []
    passes: list[float] = []
    housekeeping = Housekeeping(
        Settings(secret_key=SECRET_KEY, retention_interval_s=60, recovery_grace_s=1), sessions,
        lambda _r, ids: handed.extend(ids), clock=lambda: now[0],
        retention=lambda _sessions, _settings: passes.append(now[0]))
    housekeeping.tick()
    assert handed == accepted.pending and passes == [0.0]  # both at once on start
    now[0] += 30
    housekeeping.tick()
    assert passes == [0.0]  # retention not due yet
    now[0] += 31
    housekeeping.tick()
    assert passes == [0.0, 61.0]


def test_housekeeping_runs_the_real_retention_by_default(
    sessions: sessionmaker[Session],
) -> None:
    deliver_batch(runtime_for(sessions, ScriptedProvider()), *_sent(sessions))
    Housekeeping(Settings(secret_key=SECRET_KEY), sessions, lambda _r, _ids: None).tick()
    with sessions() as session:
        state = session.scalar(select(RollupState))
    assert state is not None and state.attempts_seen_upto > 0  # retention's roll-up ran


def _sent(sessions: sessionmaker[Session]) -> tuple[str, list[int]]:
    accepted = accepted_send(sessions, phones(1))
    return accepted.request_id, accepted.pending
