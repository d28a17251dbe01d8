"""Per-app rate limits shared by every API process through Redis, and the per-app cap on
in-flight sends — each on a stack of its own, as users deploy them (boto3, retries off)."""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from botocore.exceptions import ClientError
from sqlalchemy import create_engine, text

from tests.fakes.smtp import FakeSmtp
from tests.stack import Stack, pinpoint

RPS, BURST = 2, 3


def new_client(stack: Stack, url: str) -> Any:
    """A client with an access key of its own: calls outside any app (CreateApp, GetApps)
    spend the key's bucket, so each test starts with a full one."""
    out = stack.run("keys", "create").stdout
    values = dict(line.split("=", 1) for line in out.split())
    return pinpoint(url, values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"])


def error_code(call: Callable[[], Any]) -> str:
    try:
        call()
    except ClientError as exc:
        status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
        return f"{status} {exc.response['Error']['Code']}"
    return "ok"


def burst(calls: list[Callable[[], Any]]) -> list[str]:
    """Run the calls at once (a barrier releases every thread together)."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> str:
        start.wait()
        return error_code(call)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


# --- rate limits across two API processes --------------------------------------------------


@pytest.fixture(scope="module")
def limited() -> Iterator[tuple[Stack, list[str]]]:
    stack = Stack("ratelimit", env={
        "HERALD_RATE_LIMIT_RPS": str(RPS), "HERALD_RATE_LIMIT_BURST": str(BURST)})
    try:
        yield stack, [stack.start_api(), stack.start_api()]
    finally:
        stack.stop()


def test_burst_across_two_api_processes_gets_exactly_the_bucket_through(
    limited: tuple[Stack, list[str]]
) -> None:
    stack, urls = limited
    app_id = new_client(stack, urls[0]).create_app(
        CreateApplicationRequest={"Name": "limited"})["ApplicationResponse"]["Id"]
    clients = [pinpoint(url, retries=1) for url in urls]
    request = {"MessageConfiguration": {"DefaultMessage": {"Body": "hi"}},
               "Users": {"nobody": {}}}
    calls = [
        (lambda c=clients[i % 2]: c.send_users_messages(
            ApplicationId=app_id, SendUsersMessageRequest=request))
        for i in range(12)
    ]
    clock = redis.Redis.from_url(stack.redis_url)
    began = float("{}.{:06d}".format(*clock.time()))
    outcomes = burst(calls)
    ended = float("{}.{:06d}".format(*clock.time()))

    passed = outcomes.count("ok")
    assert set(outcomes) <= {"ok", "429 TooManyRequestsException"}, outcomes
    # The bucket starts full (BURST) and refills at RPS during the burst, measured on Redis's
    # clock, which the bucket itself uses. Two unshared buckets would let 2 x BURST through.
    assert BURST <= passed <= BURST + math.floor(RPS * (ended - began)), (passed, outcomes)


def test_every_app_operation_counts_and_the_bucket_refills(
    limited: tuple[Stack, list[str]]
) -> None:
    stack, urls = limited
    admin = new_client(stack, urls[0])
    app_id = admin.create_app(CreateApplicationRequest={"Name": "a"})["ApplicationResponse"][
        "Id"]
    other_id = admin.create_app(CreateApplicationRequest={"Name": "b"})["ApplicationResponse"][
        "Id"]
    first, second = (pinpoint(url) for url in urls)
    management = [
        lambda: first.get_app(ApplicationId=app_id),
        lambda: second.get_channels(ApplicationId=app_id),
        lambda: first.update_endpoint(ApplicationId=app_id, EndpointId="e", EndpointRequest={
            "ChannelType": "EMAIL", "Address": "a@x.test"}),
        lambda: second.get_channels(ApplicationId=app_id),
        lambda: first.get_app(ApplicationId=app_id),
        lambda: second.get_app(ApplicationId=app_id),
        lambda: first.get_app(ApplicationId=app_id),
        lambda: second.get_app(ApplicationId=app_id),
    ]
    outcomes = burst(management)
    assert "429 TooManyRequestsException" in outcomes, outcomes
    # Another app has a bucket of its own.
    assert error_code(lambda: first.get_app(ApplicationId=other_id)) == "ok"
    # Tokens come back at RPS: poll until one does.
    deadline = time.monotonic() + 10 * BURST / RPS
    while error_code(lambda: second.get_app(ApplicationId=app_id)) != "ok":
        assert time.monotonic() < deadline, "the bucket never refilled"
        time.sleep(0.1)


def test_calls_outside_an_app_spend_the_access_keys_bucket(
    limited: tuple[Stack, list[str]]
) -> None:
    stack, urls = limited
    client = new_client(stack, urls[0])
    refusals: list[str] = []

    def get_apps() -> None:
        try:
            client.get_apps()
        except ClientError as exc:
            refusals.append(exc.response["Error"]["Message"])
            raise

    outcomes = burst([get_apps for _ in range(2 * BURST + 2)])
    assert "429 TooManyRequestsException" in outcomes and "ok" in outcomes, outcomes
    assert all("access key" in message for message in refusals), refusals
    # A different key is not slowed down by this one.
    assert new_client(stack, urls[1]).get_apps()["ApplicationsResponse"] is not None


# --- the in-flight cap ------------------------------------------------------------------------

CAP = 5


@pytest.fixture(scope="module")
def capped(smtp: FakeSmtp) -> Iterator[Stack]:
    # No worker until the test starts one: deliveries stay pending, in flight.
    stack = Stack("inflight", env={
        "HERALD_MAX_INFLIGHT_SENDS_PER_APP": str(CAP), "HERALD_SYNC_TIMEOUT_S": "0.5",
        "HERALD_SMTP_URL": smtp.url})
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def _rows(database_url: str, app_id: str) -> tuple[int, int, int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(text(  # type: ignore[return-value]
                "select (select count(*) from message_requests where app_id = :a),"
                " (select count(*) from deliveries where app_id = :a),"
                " (select count(*) from deliveries where app_id = :a and not final)"),
                {"a": app_id}).one())
    finally:
        engine.dispose()


def test_inflight_cap_refuses_sends_over_it_and_writes_nothing(capped: Stack) -> None:
    url = capped.apis[0][1]
    client = pinpoint(url)
    app_id = client.create_app(CreateApplicationRequest={"Name": "capped"})[
        "ApplicationResponse"]["Id"]
    other_id = client.create_app(CreateApplicationRequest={"Name": "other"})[
        "ApplicationResponse"]["Id"]
    endpoints = {"a": 2, "b": 2, "c": 3, "d": 1}
    for app in (app_id, other_id):
        client.update_email_channel(ApplicationId=app, EmailChannelRequest={
            "FromAddress": "cap@herald.test", "Identity": "herald.test", "Enabled": True})
        items = [{"Id": f"{user}{i}", "ChannelType": "EMAIL", "Address": f"{user}{i}@x.test",
                  "User": {"UserId": user}} for user, n in endpoints.items() for i in range(n)]
        items.append({"Id": "o0", "ChannelType": "EMAIL", "Address": "o@x.test",
                      "OptOut": "ALL", "User": {"UserId": "o"}})
        client.update_endpoints_batch(ApplicationId=app, EndpointBatchRequest={"Item": items})

    def send(app: str, *users: str) -> str:
        return error_code(lambda: client.send_users_messages(
            ApplicationId=app, SendUsersMessageRequest={
                "MessageConfiguration": {"DefaultMessage": {"Body": "hi"}},
                "Users": {user: {} for user in users}}))

    assert send(app_id, "a", "b") == "ok"  # 4 in flight
    assert _rows(capped.database_url, app_id)[2] == 4
    before = _rows(capped.database_url, app_id)
    assert send(app_id, "c") == "429 TooManyRequestsException"  # 4 + 3 > 5
    assert send(app_id, "a") == "429 TooManyRequestsException"  # 4 + 2 > 5
    assert _rows(capped.database_url, app_id) == before  # refused before writing anything
    with pytest.raises(ClientError) as excinfo:
        client.send_messages(ApplicationId=app_id, MessageRequest={
            "MessageConfiguration": {"DefaultMessage": {"Body": "hi"}},
            "Addresses": {f"x{i}@x.test": {"ChannelType": "EMAIL"} for i in range(2)}})
    assert excinfo.value.response["Error"]["Code"] == "TooManyRequestsException"
    assert "in flight" in excinfo.value.response["Error"]["Message"]

    assert send(app_id, "d") == "ok"  # 4 + 1 = 5: at the cap, not over it
    # Sends that add nothing to deliver pass even at the cap: opted out, no endpoints.
    assert send(app_id, "o", f"nobody-{uuid.uuid4().hex[:6]}") == "ok"
    assert _rows(capped.database_url, app_id)[2] == CAP
    # The cap is per app.
    assert send(other_id, "c") == "ok"

    # Once a worker finishes deliveries, the app may send again.
    capped.start_worker()
    deadline = time.monotonic() + 60
    while _rows(capped.database_url, app_id)[2] > 0:
        assert time.monotonic() < deadline, "deliveries never finished"
        time.sleep(0.2)
    assert send(app_id, "c") == "ok"
