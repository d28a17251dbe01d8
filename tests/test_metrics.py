"""/metrics: scraped from a live `herald api` after boto3 sends through a live `herald worker`
and a real SMTP server; and the fleet collector's bookkeeping against a Postgres of its own."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

from tests.fakes.smtp import FakeSmtp
from tests.stack import (
    PrivateRedis,
    Stack,
    migrated_database,
    pinpoint,
)
from tests.test_management import _signed
from worker.results.metrics import FleetCollector

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(exposition: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(url: str) -> Samples:
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def wait_for(read: Callable[[], Samples], ready: Callable[[Samples], bool],
             timeout: float = 30) -> Samples:
    """Scrape until ``ready`` holds (the fleet numbers are cached briefly); the last scrape
    is returned either way so the assertions that follow say what was missing."""
    deadline = time.monotonic() + timeout
    while True:
        samples = read()
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.2)


@pytest.fixture(scope="module")
def metrics_stack(smtp: FakeSmtp) -> Iterator[Stack]:
    stack = Stack("metrics", env={
        "HERALD_SMTP_URL": smtp.url,
        "HERALD_METRICS_CACHE_S": "0.2",
        "HERALD_RETRY_BASE_DELAY_S": "0.1",
    })
    try:
        stack.start_worker()
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def _email_app(client: Any, endpoints: dict[str, str]) -> str:
    app_id = str(client.create_app(CreateApplicationRequest={"Name": "metrics"})[
        "ApplicationResponse"]["Id"])
    client.update_email_channel(ApplicationId=app_id, EmailChannelRequest={
        "FromAddress": "ops@herald.test", "Identity": "herald.test", "Enabled": True})
    client.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": [
        {"Id": endpoint_id, "ChannelType": "EMAIL", "Address": address,
         "User": {"UserId": "ada"}} for endpoint_id, address in endpoints.items()]})
    return app_id


def test_a_send_shows_in_deliveries_attempts_latency_and_requests(
    metrics_stack: Stack, smtp: FakeSmtp
) -> None:
    url = metrics_stack.apis[0][1]
    client = pinpoint(url)
    tag = uuid.uuid4().hex[:8]
    ok, bounce, flaky = f"ok-{tag}@m.test", f"bounce-{tag}@m.test", f"flaky-{tag}@m.test"
    app_id = _email_app(client, {"ok": ok, "bounce": bounce, "flaky": flaky})
    smtp.script(bounce, [550])
    smtp.script(flaky, [451, 250])
    before = scrape(url)

    response = client.send_users_messages(ApplicationId=app_id, SendUsersMessageRequest={
        "MessageConfiguration": {"EmailMessage": {"SimpleEmail": {
            "Subject": {"Data": "Metrics"}, "TextPart": {"Data": "Counted."}}}},
        "Users": {"ada": {}},
    })["SendUsersMessageResponse"]["Result"]["ada"]
    assert {k: v["DeliveryStatus"] for k, v in response.items()} == {
        "ok": "SUCCESSFUL", "bounce": "PERMANENT_FAILURE", "flaky": "SUCCESSFUL"}
    with pytest.raises(client.exceptions.NotFoundException):
        client.get_app(ApplicationId="0" * 32)

    def rose(name: str, by: float, **labels: str) -> Callable[[Samples], bool]:
        return lambda s: value(s, name, **labels) - value(before, name, **labels) >= by

    after = wait_for(lambda: scrape(url), lambda s: all(check(s) for check in (
        rose("herald_deliveries_total", 2, channel="EMAIL", status="SUCCESSFUL"),
        rose("herald_delivery_attempts_total", 1, channel="EMAIL", provider="smtp",
             status="TEMPORARY_FAILURE"),
    )))

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("herald_deliveries_total", channel="EMAIL", status="SUCCESSFUL") == 2
    assert delta("herald_deliveries_total", channel="EMAIL", status="PERMANENT_FAILURE") == 1
    assert delta("herald_delivery_attempts_total", channel="EMAIL", provider="smtp",
                 status="SUCCESSFUL") == 2
    assert delta("herald_delivery_attempts_total", channel="EMAIL", provider="smtp",
                 status="TEMPORARY_FAILURE") == 1
    assert delta("herald_delivery_attempts_total", channel="EMAIL", provider="smtp",
                 status="PERMANENT_FAILURE") == 1
    assert delta("herald_delivery_retries_total", channel="EMAIL", provider="smtp") == 1
    assert delta("herald_provider_latency_seconds_count", channel="EMAIL", provider="smtp") == 4
    assert delta("herald_provider_latency_seconds_bucket", channel="EMAIL", provider="smtp",
                 le="+Inf") == 4
    assert delta("herald_provider_latency_seconds_sum", channel="EMAIL", provider="smtp") > 0
    assert delta("herald_http_requests_total", operation="send_users_messages", method="POST",
                 status="200") == 1
    assert delta("herald_http_requests_total", operation="get_app", method="GET",
                 status="404") == 1
    assert delta("herald_http_request_duration_seconds_count",
                 operation="send_users_messages") == 1
    assert delta("herald_sync_wait_seconds_count", result="complete") == 1
    assert value(after, "herald_deliveries_in_flight", channel="EMAIL", status="PENDING") == 0
    assert ("herald_queue_depth", frozenset({("queue", "herald")})) in after
    assert value(after, "herald_fleet_metrics_errors_total") == 0


def test_metrics_can_require_a_signature(metrics_stack: Stack) -> None:
    metrics_stack.env["HERALD_METRICS_OPEN"] = "false"
    try:
        url = metrics_stack.start_api()
    finally:
        del metrics_stack.env["HERALD_METRICS_OPEN"]
    unsigned = httpx.get(url + "/metrics")
    assert unsigned.status_code == 403
    assert unsigned.headers["X-Amzn-ErrorType"] == "ForbiddenException"
    signed = _signed(url, "GET", "/metrics")
    assert signed.status_code == 200
    assert "herald_deliveries_total" in signed.text
    # The default stays open.
    assert httpx.get(metrics_stack.apis[0][1] + "/metrics").status_code == 200


@pytest.fixture
def own_database() -> Iterator[str]:
    with migrated_database("fleet") as url:
        yield url


def test_fleet_collector_counts_rows_folds_new_attempts_and_reads_the_queue(
    own_database: str, request: pytest.FixtureRequest,
) -> None:
    """Rows written straight into the result table, as any worker anywhere would."""
    engine = create_engine(own_database)
    own = PrivateRedis().start()
    request.addfinalizer(own.stop)
    queue = redis.Redis.from_url(own.url)
    queue.rpush("herald", b"a", b"b", b"c")
    queue.rpush("herald\x06\x163", b"d")
    ticks = itertools.count(step=60)  # every refresh finds its cache expired
    collector = FleetCollector(
        sessionmaker(engine), broker_url=own.url,
        cache_s=5, clock=lambda: float(next(ticks)),
    )
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(text("insert into applications (id, name, tags, created_at) "
                          "values ('app1', 'fleet', '{}', :now)"), {"now": now})
        conn.execute(text(
            "insert into message_requests (id, app_id, kind, payload, recipients, created_at) "
            "values ('req1', 'app1', 'users', '{}', 3, :now)"), {"now": now})
        for recipient, status, final, lease in (
            ("e1", "SUCCESSFUL", True, None),
            ("e2", None, False, now + timedelta(minutes=1)),  # a worker is sending it now
            ("e3", "THROTTLED", False, None),  # waiting for its retry
        ):
            conn.execute(text(
                "insert into deliveries (request_id, app_id, recipient, channel_type, "
                "delivery_status, attempts, final, lease_until, created_at, updated_at) "
                "values ('req1', 'app1', :r, 'SMS', :s, 1, :f, :l, :now, :now)"),
                {"r": recipient, "s": status, "f": final, "l": lease, "now": now})

    def attempt(recipient: str, number: int, status: str, ms: float) -> None:
        with engine.begin() as conn:
            conn.execute(text(
                "insert into delivery_attempts (delivery_id, attempt, provider, "
                "delivery_status, status_code, started_at, duration_ms) select id, :n, "
                "'twilio', :s, 200, :now, :ms from deliveries where recipient = :r"),
                {"r": recipient, "n": number, "s": status, "now": now, "ms": ms})

    attempt("e1", 1, "SUCCESSFUL", 30.0)
    first = parse_collector(collector)
    assert value(first, "herald_deliveries_total", channel="SMS", status="SUCCESSFUL") == 1
    assert value(first, "herald_deliveries_in_flight", channel="SMS", status="PENDING") == 1
    assert value(first, "herald_deliveries_in_flight", channel="SMS", status="THROTTLED") == 1
    assert value(first, "herald_deliveries_sending") == 1
    assert value(first, "herald_queue_depth", queue="herald") == 4
    assert value(first, "herald_delivery_attempts_total", channel="SMS", provider="twilio",
                 status="SUCCESSFUL") == 1
    assert value(first, "herald_provider_latency_seconds_bucket", channel="SMS",
                 provider="twilio", le="0.025") == 0
    assert value(first, "herald_provider_latency_seconds_bucket", channel="SMS",
                 provider="twilio", le="0.05") == 1

    attempt("e3", 1, "THROTTLED", 400.0)
    attempt("e3", 2, "THROTTLED", 600.0)
    # Attempts not yet rolled up are read as they are, committed rows on the next refresh.
    third = parse_collector(collector)
    assert value(third, "herald_delivery_attempts_total", channel="SMS", provider="twilio",
                 status="THROTTLED") == 2
    assert value(third, "herald_delivery_retries_total", channel="SMS", provider="twilio") == 1
    assert value(third, "herald_provider_latency_seconds_count", channel="SMS",
                 provider="twilio") == 3
    assert value(third, "herald_provider_latency_seconds_bucket", channel="SMS",
                 provider="twilio", le="0.5") == 2
    assert value(third, "herald_provider_latency_seconds_sum", channel="SMS",
                 provider="twilio") == pytest.approx(1.03)
    # Rows are never counted twice.
    fourth = parse_collector(collector)
    assert value(fourth, "herald_provider_latency_seconds_count", channel="SMS",
                 provider="twilio") == 3

    with engine.begin() as conn:
        conn.execute(text("update deliveries set delivery_status = 'SUCCESSFUL', final = true, "
                          "lease_until = null where recipient in ('e2', 'e3')"))
    fifth = parse_collector(collector)
    assert value(fifth, "herald_deliveries_total", channel="SMS", status="SUCCESSFUL") == 3
    assert value(fifth, "herald_deliveries_in_flight", channel="SMS", status="PENDING") == 0
    assert value(fifth, "herald_deliveries_sending") == 0
    engine.dispose()


def test_fleet_collector_serves_the_last_numbers_when_the_database_is_down(
    own_database: str,
) -> None:
    engine = create_engine(own_database)
    collector = FleetCollector(sessionmaker(engine), cache_s=0)
    healthy = parse_collector(collector)
    assert value(healthy, "herald_fleet_metrics_errors_total") == 0
    broken = FleetCollector(
        sessionmaker(create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")), cache_s=0
    )
    failed = parse_collector(broken)
    assert value(failed, "herald_fleet_metrics_errors_total") == 1
    assert ("herald_deliveries_total", frozenset()) not in failed
    engine.dispose()


def parse_collector(collector: FleetCollector) -> Samples:
    from prometheus_client import generate_latest

    return parse(generate_latest(collector).decode())  # type: ignore[arg-type]
