"""Preparing a batch, called directly against real Postgres (the plain function tier of
``deliver_batch``): a row that cannot be prepared, a row that keeps killing its workers, the
batch's bound on rendered text and the request cache's memory bound. Channels without a
transport deliver to the console provider."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from tests.stack import SECRET_KEY, create_database, drop_database
from worker import wire
from worker.core.config import Settings
from worker.core.db import utcnow
from worker.core.migrate import upgrade
from worker.core.models import Delivery, DeliveryAttempt, Endpoint, SendRequest
from worker.delivery.batch import QUARANTINE_AFTER, RequestCache, Runtime, deliver_batch
from worker.delivery.runtime import build_runtime
from worker.intake.accept import accept_users_request
from worker.management.applications import create_application
from worker.management.channels import ChannelCache, update_channel
from worker.management.endpoints import upsert_endpoints


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    name = f"herald_test_delivery_{uuid.uuid4().hex[:6]}"
    settings = Settings(database_url=create_database(name),
                        secret_key=SECRET_KEY)
    upgrade(settings)
    runtime = build_runtime(settings, notify=lambda _request_id: None)
    yield runtime
    runtime.loop.close()
    runtime.sessions.kw["bind"].dispose()
    drop_database(name)


def _email_send(runtime: Runtime, users: dict[str, dict[str, Any]],
                message: dict[str, Any] | None = None) -> tuple[str, dict[str, int]]:
    """An app with an e-mail endpoint per user, and one accepted send to all of them.
    Returns the request id and each user's delivery row id."""
    with runtime.sessions() as session, session.begin():
        app = create_application(session, wire.CreateApplicationRequest(name="delivery"))
        update_channel(session, app.id, "email", {"FromAddress": "ops@herald.test",
                                                  "Identity": "herald.test"}, runtime.settings)
        upsert_endpoints(session, app.id, [
            (f"ep-{user}", wire.EndpointRequest.model_validate(
                {"ChannelType": "EMAIL", "Address": f"{user}@herald.test",
                 "User": {"UserId": user}}))
            for user in users
        ])
        app_id = app.id
    message = message or {"Body": "Hello {{User.UserId}}"}
    payload = {"MessageConfiguration": {"DefaultMessage": message},
               "Users": {user: {} for user in users}}
    with runtime.sessions() as session, session.begin():
        accepted = accept_users_request(
            session, app_id, wire.SendUsersMessageRequest.model_validate(payload), payload,
            ChannelCache(runtime.settings), runtime.settings)
    with runtime.sessions() as session:
        ids = {user: row_id for user, row_id in session.execute(
            select(Delivery.user_id, Delivery.id).where(
                Delivery.request_id == accepted.request_id))}
    for user, changes in users.items():
        if changes:
            with runtime.sessions() as session, session.begin():
                session.execute(update(Delivery).where(Delivery.id == ids[user])
                                .values(**changes))
    return accepted.request_id, ids


def _outcomes(runtime: Runtime, request_id: str) -> dict[str, tuple[Any, ...]]:
    with runtime.sessions() as session:
        return {row.user_id: (row.delivery_status, row.status_code, row.status_message,
                              row.final, row.attempts)
                for row in session.execute(select(Delivery).where(
                    Delivery.request_id == request_id)).scalars()}


def _dead_claims(count: int) -> dict[str, Any]:
    """A row as ``count`` claims whose workers died before recording an outcome leave it."""
    return {"attempts": count, "lease_until": utcnow() - timedelta(seconds=1)}


def test_a_row_that_cannot_be_prepared_fails_alone(runtime: Runtime) -> None:
    request_id, ids = _email_send(runtime, {"fine": {}, "broken": {}})
    # An endpoint document no intake would store (User must be an object): the renderer
    # raises on it as it would on any input nobody foresaw.
    with runtime.sessions() as session, session.begin():
        row = session.get(Delivery, ids["broken"])
        assert row is not None
        endpoint = session.get(Endpoint, (row.app_id, row.endpoint_id))
        assert endpoint is not None
        endpoint.document = {"User": "not an object"}

    report = deliver_batch(runtime, request_id, list(ids.values()))

    outcomes = _outcomes(runtime, request_id)
    assert outcomes["fine"][0] == "SUCCESSFUL"
    status, code, message, final, _ = outcomes["broken"]
    assert (status, code, final) == ("PERMANENT_FAILURE", 500, True)
    assert message == ("Herald could not prepare this message (AttributeError); it will not be "
                       "retried")
    assert report.final == 2 and not report.retries


def test_a_row_in_flight_in_several_dead_workers_is_quarantined(runtime: Runtime) -> None:
    request_id, ids = _email_send(runtime, {
        "fresh": {},
        "one-death": _dead_claims(1),  # DESIGN.md §4: may be sent once more
        "deaths-below-limit": _dead_claims(QUARANTINE_AFTER - 1),
        "poison": _dead_claims(QUARANTINE_AFTER),
        # Two recorded tries (retries) and one death: not a poison pill.
        "retried-then-died": _dead_claims(QUARANTINE_AFTER),
    })
    with runtime.sessions() as session, session.begin():
        session.execute(insert(DeliveryAttempt), [
            {"delivery_id": ids["retried-then-died"], "attempt": attempt, "provider": "smtp",
             "delivery_status": "TEMPORARY_FAILURE", "status_code": 451,
             "started_at": utcnow(), "duration_ms": 1.0}
            for attempt in (1, 2)
        ])

    deliver_batch(runtime, request_id, list(ids.values()))

    outcomes = _outcomes(runtime, request_id)
    for user in ("fresh", "one-death", "deaths-below-limit", "retried-then-died"):
        assert outcomes[user][0] == "SUCCESSFUL", (user, outcomes[user])
    assert outcomes["poison"] == (
        "PERMANENT_FAILURE", 500,
        f"Quarantined: this delivery was being prepared or sent by a worker that died "
        f"{QUARANTINE_AFTER} times",
        True, QUARANTINE_AFTER + 1,
    )
    with runtime.sessions() as session:
        recorded = session.scalars(select(DeliveryAttempt.provider).where(
            DeliveryAttempt.delivery_id == ids["poison"])).all()
    assert recorded == ["herald"]  # the quarantine is recorded like any attempt


def test_a_message_over_its_budget_fails_before_it_is_built(runtime: Runtime) -> None:
    # The poison pill of issue 14, in the plain function: 10¹² characters asked for.
    request_id, ids = _email_send(runtime, {"target": {}, "other": {}}, {
        "Body": "{{A}}" * 1_000_000, "Substitutions": {"A": ["x" * 1_000_000]}})

    deliver_batch(runtime, request_id, list(ids.values()))

    for status, code, message, final, _ in _outcomes(runtime, request_id).values():
        assert (status, code, final) == ("PERMANENT_FAILURE", 400, True)
        assert "would exceed 10,485,760 characters" in message


def test_a_batch_holds_a_bounded_amount_of_rendered_text(runtime: Runtime) -> None:
    """Rows past the batch's rendering budget are handed back untried and come back as a
    retry due now; each batch sends at least one, so every row is delivered, once."""
    users = {f"u{i}": {} for i in range(5)}
    request_id, ids = _email_send(runtime, users, {
        "Body": "{{A}}", "Substitutions": {"A": ["x" * 1_000]}})
    small = dataclasses.replace(runtime, batch_render_chars=2_500)  # two messages of 1,000

    first = deliver_batch(small, request_id, sorted(ids.values()))

    assert first.final == 2
    assert [(retry.delay_s, len(retry.ids)) for retry in first.retries or ()] == [(0.0, 3)]
    waiting = _outcomes(runtime, request_id)
    assert sorted(row[4] for row in waiting.values()) == [0, 0, 0, 1, 1]  # claims undone
    pending = (first.retries or [])[0].ids
    while pending:
        report = deliver_batch(small, request_id, pending)
        assert report.final >= 1
        pending = [i for retry in report.retries or () for i in retry.ids]
    outcomes = _outcomes(runtime, request_id)
    assert {row[0] for row in outcomes.values()} == {"SUCCESSFUL"}
    assert {row[4] for row in outcomes.values()} == {1}


def _stored_request(runtime: Runtime, app_id: str, padding: int) -> str:
    request_id = str(uuid.uuid4())
    with runtime.sessions() as session, session.begin():
        session.add(SendRequest(
            id=request_id, app_id=app_id, kind="users", recipients=1, created_at=utcnow(),
            payload={"MessageConfiguration": {"DefaultMessage": {"Body": "p" * padding}},
                     "Users": {"u": {}}}))
    return request_id


def test_request_cache_is_bounded_by_the_payloads_size(runtime: Runtime) -> None:
    with runtime.sessions() as session, session.begin():
        app_id = create_application(session, wire.CreateApplicationRequest(name="cache")).id
    cache = RequestCache(size=256, max_chars=250_000)
    first, second, third = (_stored_request(runtime, app_id, 100_000) for _ in range(3))
    too_big = _stored_request(runtime, app_id, 300_000)
    with runtime.sessions() as session:
        for request_id in (first, second):
            entry = cache.get(session, request_id)
            assert entry is not None and entry[0].id == request_id
        assert 200_000 < cache.chars <= 250_000
        cache.get(session, first)  # used again: the second is now the oldest
        cache.get(session, third)
        assert cache.chars <= 250_000
        assert (first in cache, second in cache, third in cache) == (True, False, True)
        entry = cache.get(session, too_big)  # served, but not kept
        assert entry is not None and entry[1].message_configuration.default_message is not None
        assert too_big not in cache and first in cache and third in cache
        assert cache.get(session, "no-such-request") is None
