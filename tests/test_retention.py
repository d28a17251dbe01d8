"""Result retention (worker/delivery/retention.py) against real databases: rows written
straight into the tables as any worker would, pruned by the plain functions the workers call and by
`herald prune`; the fleet counters read before and after by FleetCollector."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from tests.stack import Stack, migrated_database
from tests.test_dashboard import _signed_in
from tests.test_metrics import Samples, parse_collector
from worker.core.config import Settings
from worker.core.db import session_factory
from worker.core.migrate import upgrade
from worker.core.models import (
    Application,
    Delivery,
    DeliveryAttempt,
    DeliveryTotal,
    SendRequest,
)
from worker.delivery.retention import final_left, maintain, oldest_result, prune, roll_up_attempts
from worker.results.metrics import FleetCollector

DAY = 86400
RETENTION_S = 30 * DAY
NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=40)
RECENT = NOW - timedelta(days=1)
COUNTERS = ("herald_deliveries_total", "herald_delivery_attempts_total",
            "herald_delivery_retries_total", "herald_provider_latency_seconds_bucket",
            "herald_provider_latency_seconds_count", "herald_provider_latency_seconds_sum")


@pytest.fixture
def database() -> Iterator[str]:
    with migrated_database("retention") as url:
        yield url


@pytest.fixture
def engine(database: str) -> Iterator[Engine]:
    engine = create_engine(database)
    yield engine
    engine.dispose()


class Rows:
    """Writes requests, deliveries and attempts as the intake and the workers do."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with engine.begin() as conn:
            conn.execute(insert(Application).values(
                id="app1", name="retention", tags={}, created_at=OLD))

    def request(self, created_at: datetime) -> str:
        request_id = str(uuid.uuid4())
        with self.engine.begin() as conn:
            conn.execute(insert(SendRequest).values(
                id=request_id, app_id="app1", kind="users", payload={}, recipients=1,
                created_at=created_at))
        return request_id

    def delivery(self, request_id: str, *, final_at: datetime | None,
                 status: str | None = "SUCCESSFUL", channel: str = "SMS",
                 created_at: datetime | None = None) -> int:
        created_at = created_at or final_at or OLD
        with self.engine.begin() as conn:
            return int(conn.execute(insert(Delivery).values(
                request_id=request_id, app_id="app1", recipient=uuid.uuid4().hex,
                channel_type=channel, delivery_status=status, attempts=1,
                final=final_at is not None, created_at=created_at, updated_at=created_at,
                final_at=final_at).returning(Delivery.id)).scalar_one())

    def attempt(self, delivery_id: int, number: int = 1, status: str = "SUCCESSFUL",
                ms: float = 30.0, provider: str = "twilio") -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(insert(DeliveryAttempt).values(
                delivery_id=delivery_id, attempt=number, provider=provider,
                delivery_status=status, status_code=200, started_at=NOW, duration_ms=ms,
            ).returning(DeliveryAttempt.id)).scalar_one())

    def ids(self, table: str) -> set[object]:
        with self.engine.connect() as conn:
            return set(conn.execute(text(f"select id from {table}")).scalars())


def roll_up_now(sessions: sessionmaker[Session]) -> None:
    """Two maintenance passes a settling time apart: everything committed is rolled up."""
    roll_up_attempts(sessions, settle_s=0)
    roll_up_attempts(sessions, settle_s=0)


def collector(engine: Engine) -> FleetCollector:
    ticks = itertools.count(step=60)  # every scrape finds the cache expired
    return FleetCollector(sessionmaker(engine), cache_s=5, clock=lambda: float(next(ticks)))


def counters(samples: Samples) -> Samples:
    return {key: value for key, value in samples.items() if key[0] in COUNTERS}


def assert_same_counters(before: Samples, after: Samples) -> None:
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key] == pytest.approx(value), key


def test_prune_deletes_old_final_results_and_keeps_everything_else(engine: Engine) -> None:
    rows = Rows(engine)
    sessions = sessionmaker(engine)
    # A request entirely final and old: it goes, with its deliveries and their attempts.
    gone = rows.request(OLD)
    gone_a = rows.delivery(gone, final_at=OLD)
    gone_b = rows.delivery(gone, final_at=OLD, status="PERMANENT_FAILURE")
    gone_attempts = {rows.attempt(gone_a, 1, "TEMPORARY_FAILURE", 400),
                     rows.attempt(gone_a, 2, "SUCCESSFUL", 20),
                     rows.attempt(gone_b, 1, "PERMANENT_FAILURE", 7000)}
    # An old request with a row still in flight: that row and the request stay.
    mixed = rows.request(OLD)
    mixed_final = rows.delivery(mixed, final_at=OLD)
    mixed_attempt = rows.attempt(mixed_final)
    in_flight = rows.delivery(mixed, final_at=None, status="THROTTLED", created_at=OLD)
    in_flight_attempt = rows.attempt(in_flight, 1, "THROTTLED", 100)
    # An old request that finished inside the window, and a recent one: both stay.
    late = rows.request(OLD)
    late_final = rows.delivery(late, final_at=RECENT, created_at=OLD)
    recent = rows.request(RECENT)
    recent_final = rows.delivery(recent, final_at=RECENT, channel="EMAIL")
    recent_attempt = rows.attempt(recent_final, provider="smtp")
    roll_up_now(sessions)
    # Old and final, but its attempt came after the roll-up: it waits for the next one.
    waits = rows.request(OLD)
    waits_final = rows.delivery(waits, final_at=OLD)
    waits_attempt = rows.attempt(waits_final, 1, "TIMEOUT", 10_000)
    newest = rows.attempt(recent_final, 2, "SUCCESSFUL", 50, provider="smtp")
    deliveries, attempts = rows.ids("deliveries"), rows.ids("delivery_attempts")

    report = prune(sessions, retention_s=RETENTION_S, max_batches=None)

    assert (report.deliveries, report.attempts, report.requests) == (3, 4, 1)
    assert report.complete
    assert rows.ids("deliveries") == deliveries - {gone_a, gone_b, mixed_final}
    assert rows.ids("delivery_attempts") == attempts - gone_attempts - {mixed_attempt}
    assert {in_flight_attempt, recent_attempt, waits_attempt, newest} <= rows.ids(
        "delivery_attempts")
    assert rows.ids("message_requests") == {mixed, late, recent, waits}
    assert late_final in rows.ids("deliveries")
    assert final_left(sessions, retention_s=RETENTION_S) == 1  # the one waiting

    roll_up_now(sessions)
    again = prune(sessions, retention_s=RETENTION_S, max_batches=None)
    assert (again.deliveries, again.attempts, again.requests) == (1, 1, 1)
    assert rows.ids("message_requests") == {mixed, late, recent}
    assert final_left(sessions, retention_s=RETENTION_S) == 0
    with sessions() as session:
        totals = {(t.channel_type, t.delivery_status): t.count
                  for t in session.scalars(select(DeliveryTotal))}
    assert totals == {("SMS", "SUCCESSFUL"): 3, ("SMS", "PERMANENT_FAILURE"): 1}


def test_counters_never_go_down_when_rows_are_pruned(engine: Engine) -> None:
    rows = Rows(engine)
    sessions = sessionmaker(engine)
    for index in range(6):
        request = rows.request(OLD)
        delivery = rows.delivery(request, final_at=OLD,
                                 status="SUCCESSFUL" if index % 3 else "PERMANENT_FAILURE")
        rows.attempt(delivery, 1, "THROTTLED", 300 + index)
        rows.attempt(delivery, 2, "SUCCESSFUL" if index % 3 else "PERMANENT_FAILURE", 40)
    keep = rows.request(RECENT)
    rows.attempt(rows.delivery(keep, final_at=RECENT), 1, "SUCCESSFUL", 12)
    still = rows.delivery(keep, final_at=None, status=None, created_at=RECENT)

    old_process = collector(engine)
    before = counters(parse_collector(old_process))
    assert before[("herald_deliveries_total", frozenset(
        {("channel", "SMS"), ("status", "SUCCESSFUL")}))] == 5
    assert before[("herald_delivery_attempts_total", frozenset(
        {("channel", "SMS"), ("provider", "twilio"), ("status", "THROTTLED")}))] == 6

    # Rolled up but not yet pruned, then pruned: the same numbers at every step, for a
    # process that was running all along and for one started afterwards.
    roll_up_now(sessions)
    assert_same_counters(before, counters(parse_collector(old_process)))
    report = prune(sessions, retention_s=RETENTION_S, max_batches=None)
    assert (report.deliveries, report.attempts) == (6, 12)
    assert_same_counters(before, counters(parse_collector(old_process)))
    new_process = collector(engine)
    assert_same_counters(before, counters(parse_collector(new_process)))

    # And they keep counting: a new attempt and a row turning final.
    rows.attempt(still, 1, "SUCCESSFUL", 8)
    with engine.begin() as conn:
        conn.execute(text("update deliveries set final = true, delivery_status = 'SUCCESSFUL', "
                          "final_at = :now where id = :id"), {"now": NOW, "id": still})
    for process in (old_process, new_process):
        grown = counters(parse_collector(process))
        diff = {key: grown[key] - before.get(key, 0) for key in grown
                if grown[key] != pytest.approx(before.get(key, 0))}
        sms_twilio = {("channel", "SMS"), ("provider", "twilio")}
        assert diff == {
            ("herald_deliveries_total", frozenset(
                {("channel", "SMS"), ("status", "SUCCESSFUL")})): 1,
            ("herald_delivery_attempts_total", frozenset(
                sms_twilio | {("status", "SUCCESSFUL")})): 1,
            ("herald_provider_latency_seconds_count", frozenset(sms_twilio)): 1,
            ("herald_provider_latency_seconds_sum", frozenset(sms_twilio)): pytest.approx(0.008),
            **{("herald_provider_latency_seconds_bucket",
                frozenset(sms_twilio | {("le", le)})): 1
               for le in ("0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0",
                          "10.0", "30.0", "+Inf")},
        }
    # Rolling the new attempt up changes nothing either.
    after_growth = counters(parse_collector(new_process))
    roll_up_now(sessions)
    assert_same_counters(after_growth, counters(parse_collector(collector(engine))))


def test_a_roll_up_between_the_collectors_reads_is_not_counted_twice(engine: Engine) -> None:
    rows = Rows(engine)
    delivery = rows.delivery(rows.request(OLD), final_at=OLD)
    for number in (1, 2, 3):
        rows.attempt(delivery, number, "THROTTLED" if number < 3 else "SUCCESSFUL", 100)
    other = create_engine(engine.url)
    roll_up_attempts(sessionmaker(other), settle_s=0)  # sees the ids; rolls nothing yet
    process = collector(engine)
    before = counters(parse_collector(process))
    assert before[("herald_delivery_attempts_total", frozenset(
        {("channel", "SMS"), ("provider", "twilio"), ("status", "THROTTLED")}))] == 2
    rolled: list[int] = []

    # Another worker's roll-up commits after the collector read the watermark and before
    # it reads the totals and the attempts above it.
    @event.listens_for(engine, "before_cursor_execute")
    def roll_up_in_between(*args: Any) -> None:
        if "attempt_totals" in args[2] and not rolled:
            rolled.append(roll_up_attempts(sessionmaker(other), settle_s=0))

    after = counters(parse_collector(process))
    event.remove(engine, "before_cursor_execute", roll_up_in_between)
    other.dispose()
    assert rolled == [3]
    assert_same_counters(before, after)


def test_batches_are_bounded(engine: Engine) -> None:
    rows = Rows(engine)
    sessions = sessionmaker(engine)
    request = rows.request(OLD)
    for _ in range(7):
        rows.delivery(request, final_at=OLD)

    first = prune(sessions, retention_s=RETENTION_S, batch_size=2, max_batches=2)
    assert (first.deliveries, first.requests, first.complete) == (4, 0, False)
    assert len(rows.ids("deliveries")) == 3
    rest = prune(sessions, retention_s=RETENTION_S, batch_size=2, max_batches=5)
    assert (rest.deliveries, rest.requests, rest.complete) == (3, 1, True)
    assert rows.ids("deliveries") == set() and rows.ids("message_requests") == set()


def test_zero_retention_keeps_everything(engine: Engine) -> None:
    rows = Rows(engine)
    rows.delivery(rows.request(OLD), final_at=OLD)
    report = prune(sessionmaker(engine), retention_s=0, max_batches=None)
    assert report.deliveries == 0 and len(rows.ids("deliveries")) == 1


def test_roll_up_waits_for_the_ids_it_saw_to_settle(engine: Engine) -> None:
    rows = Rows(engine)
    sessions = sessionmaker(engine)
    delivery = rows.delivery(rows.request(OLD), final_at=OLD)
    rows.attempt(delivery)
    rows.attempt(delivery, 2)  # the newest attempt is never pruned; this one is kept
    assert roll_up_attempts(sessions, settle_s=10, now=NOW) == 0  # first sight: recorded
    assert roll_up_attempts(sessions, settle_s=10, now=NOW + timedelta(seconds=5)) == 0
    assert prune(sessions, retention_s=RETENTION_S, max_batches=None).deliveries == 0
    assert roll_up_attempts(sessions, settle_s=10, now=NOW + timedelta(seconds=11)) == 2
    assert roll_up_attempts(sessions, settle_s=10, now=NOW + timedelta(seconds=30)) == 0


def test_two_prunes_at_once_delete_each_row_once(engine: Engine) -> None:
    rows = Rows(engine)
    sessions = sessionmaker(engine)
    with engine.begin() as conn:
        conn.execute(text(
            "insert into message_requests (id, app_id, kind, payload, recipients, created_at) "
            "select 'r' || n, 'app1', 'users', '{}', 1, :old from generate_series(1, 300) n"),
            {"old": OLD})
        conn.execute(text(
            "insert into deliveries (request_id, app_id, recipient, channel_type, "
            "delivery_status, attempts, final, created_at, updated_at, final_at) select "
            "'r' || (n % 300 + 1), 'app1', 'e' || n, 'SMS', 'SUCCESSFUL', 1, true, :old, :old, "
            ":old from generate_series(1, 900) n"), {"old": OLD})
        conn.execute(text(
            "insert into delivery_attempts (delivery_id, attempt, provider, delivery_status, "
            "status_code, started_at, duration_ms) select id, 1, 'twilio', 'SUCCESSFUL', 200, "
            ":old, 20 from deliveries"), {"old": OLD})
    rows.attempt(rows.delivery(rows.request(RECENT), final_at=RECENT))  # the newest stays
    roll_up_now(sessions)
    before = counters(parse_collector(collector(engine)))

    reports = []
    start = threading.Barrier(2)

    def run() -> None:
        start.wait()
        reports.append(prune(sessions, retention_s=RETENTION_S, batch_size=25,
                             max_batches=None))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(reports) == 2  # neither raised (a deadlock would have)
    assert sum(r.deliveries for r in reports) == 900
    assert sum(r.attempts for r in reports) == 900
    assert sum(r.requests for r in reports) == 300
    assert len(rows.ids("deliveries")) == 1 and len(rows.ids("message_requests")) == 1
    with sessions() as session:
        assert session.scalar(select(func.sum(DeliveryTotal.count))) == 900
    assert_same_counters(before, counters(parse_collector(collector(engine))))


def test_prune_on_the_embedded_sqlite_database(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, result_retention_s=RETENTION_S)
    upgrade(settings)
    sessions = session_factory(settings)
    engine = sessions.kw["bind"]
    rows = Rows(engine)
    gone = rows.request(OLD)
    rows.attempt(rows.delivery(gone, final_at=OLD), 1, "TEMPORARY_FAILURE", 300)
    rows.attempt(rows.delivery(gone, final_at=OLD, status="PERMANENT_FAILURE"), 1,
                 "PERMANENT_FAILURE", 40)
    kept = rows.request(RECENT)
    kept_final = rows.delivery(kept, final_at=RECENT)
    rows.attempt(kept_final)
    process = collector(engine)
    before = counters(parse_collector(process))

    roll_up_now(sessions)
    report = maintain(sessions, settings)

    assert (report.deliveries, report.attempts, report.requests) == (2, 2, 1)
    assert rows.ids("deliveries") == {kept_final}
    assert rows.ids("message_requests") == {kept}
    assert_same_counters(before, counters(parse_collector(process)))
    assert_same_counters(before, counters(parse_collector(collector(engine))))
    with sessions() as session:
        oldest = oldest_result(session)
    assert oldest is not None and abs(oldest - RECENT) < timedelta(seconds=1)


def test_herald_prune_deletes_old_results_now_and_says_what(
    request: pytest.FixtureRequest,
) -> None:
    """On a database no worker has maintained: the command rolls the attempts up itself."""
    stack = Stack("prune")
    request.addfinalizer(stack.stop)
    engine = create_engine(stack.database_url)
    request.addfinalizer(engine.dispose)
    rows = Rows(engine)
    gone = rows.request(OLD)
    for _ in range(3):
        rows.attempt(rows.delivery(gone, final_at=OLD))
    kept = rows.request(RECENT)
    rows.attempt(rows.delivery(kept, final_at=RECENT))

    result = stack.run("prune")

    assert "deleted 3 deliveries, 3 attempts and 1 requests" in result.stdout, result
    assert rows.ids("message_requests") == {kept}
    assert len(rows.ids("deliveries")) == 1
    assert "deleted 0 deliveries" in stack.run("prune").stdout


def test_a_retention_under_an_hour_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 3600"):
        Settings(data_dir=tmp_path, result_retention_s=60)
    assert Settings(data_dir=tmp_path, result_retention_s=0).result_retention_s == 0


def test_the_dashboard_says_how_far_back_it_sees(
    stack: Stack, api_url: str, client: Any, email_app: str
) -> None:
    client.update_endpoint(ApplicationId=email_app, EndpointId="ada", EndpointRequest={
        "ChannelType": "EMAIL", "Address": "ada@retention.test", "User": {"UserId": "ada"}})
    client.send_users_messages(ApplicationId=email_app, SendUsersMessageRequest={
        "MessageConfiguration": {"DefaultMessage": {"Body": "Kept a while."}},
        "Users": {"ada": {}}})
    with create_engine(stack.database_url).connect() as conn:
        oldest = conn.execute(select(Delivery.created_at).order_by(Delivery.id).limit(1)
                              ).scalar_one().astimezone(UTC)
    with _signed_in(stack, api_url) as browser_like:
        page = browser_like.get(api_url + "/dashboard")

    assert page.status_code == 200
    assert "Results are kept for 30 days" in page.text
    assert f"the oldest still held was created {oldest:%Y-%m-%d %H:%M:%S}Z" in page.text
