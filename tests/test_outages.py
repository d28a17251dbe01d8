"""Outages (DESIGN.md §8): Redis, the broker and Postgres go away for seconds or minutes while
sends are under way. Every process stays up without anyone restarting it, the API keeps
accepting sends, and once the dependency is back every endpoint reaches one final outcome —
none lost, none sent twice (no worker died, so not even the one repeat §4 allows)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.fakes.proxy import TcpProxy
from tests.fakes.smtp import FakeSmtp
from tests.report import figure
from tests.stack import ARTIFACTS, PrivatePostgres, PrivateRedis, RabbitVhost, Stack, pinpoint
from tests.test_reliability import (
    RECOVERY,
    all_final,
    check_exactly_once,
    final_rows,
    recorded_final,
    send_in_background,
    wait_until,
)
from tests.test_send_users import register, send

pytestmark = pytest.mark.slow

USERS = 100  # in flight when the outage starts
LATE = 10  # sent while the dependency is away


@pytest.fixture
def slow_smtp() -> Iterator[FakeSmtp]:
    server = FakeSmtp().start()
    server.data_delay_s = 0.03  # long enough that the outage lands mid-send
    yield server
    server.stop()


def email_app(client: Any, prefix: str, count: int) -> str:
    app_id = str(client.create_app(CreateApplicationRequest={"Name": prefix})[
        "ApplicationResponse"]["Id"])
    client.update_email_channel(ApplicationId=app_id, EmailChannelRequest={
        "FromAddress": "ops@herald.test", "Identity": "herald.test"})
    for start in range(0, count, 100):
        register(client, app_id, {
            f"{prefix}-{i}": {"ChannelType": "EMAIL", "Address": f"{prefix}{i}@x.test",
                              "User": {"UserId": f"{prefix}{i}"}}
            for i in range(start, min(start + 100, count))
        })
    return app_id


def users(prefix: str, first: int, count: int) -> dict[str, Any]:
    return {f"{prefix}{i}": {} for i in range(first, first + count)}


def send_while_away(client: Any, app_id: str, prefix: str) -> dict[str, Any]:
    """A send during the outage is accepted: 200, every endpoint in progress (the rows are in
    Postgres; the sweep enqueues them once the broker is back)."""
    response = send(client, app_id, {
        "MessageConfiguration": {"DefaultMessage": {"Body": "sent while away"}},
        "Users": users(prefix, USERS, LATE)})
    outcomes = [o for per_user in response["Result"].values() for o in per_user.values()]
    assert len(outcomes) == LATE
    assert {(o["DeliveryStatus"], o["StatusCode"]) for o in outcomes} == {
        ("TEMPORARY_FAILURE", 202)}
    return response


def check_all_delivered_once(stack: Stack, smtp: FakeSmtp, prefix: str,
                             responses: list[dict[str, Any]], fault: str) -> None:
    rows: list[Any] = []
    for response in responses:
        done = all_final(stack.database_url, response["RequestId"], len(response["Result"]))
        wait_until(lambda done=done: check_alive(stack) or done(), 120,  # type: ignore[misc]
                   f"every endpoint final after: {fault}")
        rows += final_rows(stack.database_url, response["RequestId"])
    check_exactly_once(smtp, rows, prefix, USERS + LATE, fault)
    received = smtp.count_by_recipient()
    repeated = [a for a, n in received.items() if a.startswith(prefix) and n > 1]
    assert repeated == [], f"sent twice although no worker died: {repeated[:5]}"


def check_alive(stack: Stack) -> None:
    for process in stack.workers:
        assert process.poll() is None, "a worker exited"
    for process, _ in stack.apis:
        assert process.poll() is None, "an API process exited"


def log_lines(stack: Stack, role: str) -> str:
    return "".join(p.read_text(errors="replace")
                   for p in ARTIFACTS.glob(f"{stack.name}-{role}-*.log"))


def check_one_line_each_way(log: str, dependency: str) -> None:
    """The outage is in the log as it started and as it ended, not once per retry."""
    lost = [line for line in log.splitlines()
            if "dependency unreachable" in line and f'"{dependency}"' in line]
    back = [line for line in log.splitlines()
            if "dependency reachable again" in line and f'"{dependency}"' in line]
    assert lost and back, f"no outage lines for {dependency}"
    # One per process that noticed (a worker's main process and its pool children each do).
    assert len(lost) <= 4 and len(back) <= 4
    assert "Trying again" not in log  # Celery's line per reconnect attempt is folded in


# --- Redis as broker and shared state -----------------------------------------------------------


@pytest.mark.parametrize("outage_s", [
    pytest.param(3, id="3s"),
    pytest.param(30, id="30s"),
    pytest.param(300, id="5min", marks=pytest.mark.timeout(600)),
])
def test_redis_outage_mid_send(outage_s: float, slow_smtp: FakeSmtp) -> None:
    redis = PrivateRedis().start()
    prefix = f"r{outage_s}x"
    stack = Stack(f"redis-outage-{outage_s}", redis_url=redis.url,
                  env={**RECOVERY, "HERALD_SMTP_URL": slow_smtp.url})
    try:
        stack.start_worker(concurrency=2)
        api_url = stack.start_api()
        client = pinpoint(api_url)
        app_id = email_app(client, prefix, USERS + LATE)
        thread, answer = send_in_background(client, app_id, list(users(prefix, 0, USERS)))
        wait_until(lambda: len(slow_smtp.received) >= 10, 30, "sends to start")
        redis.stop()
        went_away = time.monotonic()
        late = send_while_away(client, app_id, prefix)
        ready = httpx.get(api_url + "/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert {"broker", "redis"} <= set(ready.json()["problems"])
        time.sleep(max(0.0, outage_s - (time.monotonic() - went_away)))
        redis.start()  # empty, same port: every queued task is gone
        thread.join(60)
        check_all_delivered_once(stack, slow_smtp, prefix, [answer["response"], late],
                                 f"Redis away {outage_s} s mid-send, back empty")
        # Consuming resumed: a send after the outage is answered complete.
        after = send(client, app_id, {
            "MessageConfiguration": {"DefaultMessage": {"Body": "after"}},
            "Users": users(prefix, 0, 5)})
        statuses = {o["DeliveryStatus"] for u in after["Result"].values() for o in u.values()}
        assert statuses == {"SUCCESSFUL"}
        check_alive(stack)
        check_one_line_each_way(log_lines(stack, "worker"), "broker")
        assert httpx.get(api_url + "/readyz").json()["status"] == "ready"
        figure("reliability", f"Redis (broker and state) away {outage_s} s mid-send, back "
               f"empty: {USERS} in flight + {LATE} accepted while away; all final, lost=0, "
               f"repeated=0, processes restarted=0")
    finally:
        stack.stop()
        redis.stop()


# --- Postgres ----------------------------------------------------------------------------------


def test_postgres_away_20s_with_outcomes_in_hand(slow_smtp: FakeSmtp) -> None:
    """Sends finish while Postgres is away: the worker keeps their outcomes and writes them when
    it is back, so the sweep never sends them again — even though every lease ran out."""
    postgres = PrivatePostgres(Path(tempfile.mkdtemp(prefix="herald-pg-")) / "data").start()
    prefix = "pgaway"
    stack = Stack("pg-away", pg_port=postgres.port,
                  env={**RECOVERY, "HERALD_SMTP_URL": slow_smtp.url})
    try:
        stack.start_worker(concurrency=2)
        api_url = stack.start_api()
        client = pinpoint(api_url)
        app_id = email_app(client, prefix, USERS)
        thread, answer = send_in_background(client, app_id, list(users(prefix, 0, USERS)))
        wait_until(lambda: len(slow_smtp.received) >= 10, 30, "sends to start")
        postgres.stop()
        sent_while_away = len(slow_smtp.received)
        # API calls answer quickly with a clean Pinpoint error, no traceback.
        quick = pinpoint(api_url)
        with pytest.raises(ClientError) as excinfo:
            quick.get_apps()
        assert excinfo.value.response["Error"]["Code"] == "InternalServerErrorException"
        assert "Traceback" not in str(excinfo.value.response)
        assert httpx.get(api_url + "/readyz", timeout=10).status_code == 503
        time.sleep(20)  # longer than the 4 s lease: only held outcomes prevent a repeat
        postgres.start()
        thread.join(60)
        response = answer["response"]
        wait_until(all_final(stack.database_url, response["RequestId"], USERS), 120,
                   "every endpoint final after Postgres came back")
        rows = final_rows(stack.database_url, response["RequestId"])
        received = slow_smtp.count_by_recipient()
        assert len(rows) == USERS and {r.delivery_status for r in rows} == {"SUCCESSFUL"}
        assert all(received.get(f"{prefix}{i}@x.test") == 1 for i in range(USERS)), (
            "lost or sent twice: "
            f"{[(a, n) for a, n in received.items() if a.startswith(prefix) and n != 1][:5]}")
        check_alive(stack)
        check_one_line_each_way(log_lines(stack, "worker"), "database")
        assert httpx.get(api_url + "/readyz", timeout=10).status_code == 200
        figure("reliability", f"Postgres away 20 s mid-send (lease 4 s): {USERS} endpoints, "
               f"{len(slow_smtp.received) - sent_while_away} sent while away and recorded "
               f"after, lost=0, repeated=0, processes restarted=0")
    finally:
        stack.stop()
        postgres.stop("immediate")
        shutil.rmtree(postgres.directory.parent, ignore_errors=True)


# --- RabbitMQ as the broker ------------------------------------------------------------------


@pytest.fixture(scope="module")
def rabbit_proxy() -> Iterator[tuple[RabbitVhost, TcpProxy]]:
    vhost = RabbitVhost().create()
    proxy = TcpProxy(5672).start()
    yield vhost, proxy
    proxy.stop()
    vhost.delete()


def rabbit_stack(name: str, vhost: RabbitVhost, proxy: TcpProxy, smtp: FakeSmtp) -> Stack:
    stack = Stack(name, env={**RECOVERY, "HERALD_SMTP_URL": smtp.url,
                             "HERALD_BROKER_URL": vhost.url(proxy.port),
                             })
    return stack


def test_rabbitmq_sends_and_a_sigkilled_worker(
    rabbit_proxy: tuple[RabbitVhost, TcpProxy], slow_smtp: FakeSmtp,
) -> None:
    vhost, proxy = rabbit_proxy
    stack = rabbit_stack("rabbit-kill", vhost, proxy, slow_smtp)
    try:
        doomed = stack.start_worker(concurrency=2)
        client = pinpoint(stack.start_api())
        app_id = email_app(client, "rk", USERS)
        thread, answer = send_in_background(client, app_id, list(users("rk", 0, USERS)))
        wait_until(lambda: len(slow_smtp.received) >= 40, 30, "sends under way")
        stack.kill_worker(doomed)
        recorded = recorded_final(stack.database_url)
        stack.start_worker(concurrency=2)
        thread.join(60)
        response = answer["response"]
        wait_until(all_final(stack.database_url, response["RequestId"], USERS), 90,
                   "every endpoint final after the kill")
        rows = final_rows(stack.database_url, response["RequestId"])
        check_exactly_once(slow_smtp, rows, "rk", USERS, "RabbitMQ broker, SIGKILL mid-send",
                           recorded)
    finally:
        stack.stop()


@pytest.mark.parametrize("outage_s", [3, 30], ids=["3s", "30s"])
def test_rabbitmq_outage_mid_send(
    outage_s: float, rabbit_proxy: tuple[RabbitVhost, TcpProxy], slow_smtp: FakeSmtp,
) -> None:
    vhost, proxy = rabbit_proxy
    prefix = f"ro{outage_s}x"
    stack = rabbit_stack(f"rabbit-outage-{outage_s}", vhost, proxy, slow_smtp)
    try:
        stack.start_worker(concurrency=2)
        api_url = stack.start_api()
        client = pinpoint(api_url)
        app_id = email_app(client, prefix, USERS + LATE)
        thread, answer = send_in_background(client, app_id, list(users(prefix, 0, USERS)))
        wait_until(lambda: len(slow_smtp.received) >= 10, 30, "sends to start")
        proxy.cut()
        went_away = time.monotonic()
        late = send_while_away(client, app_id, prefix)
        ready = httpx.get(api_url + "/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["problems"] == {
            "broker": ready.json()["problems"]["broker"]}
        time.sleep(max(0.0, outage_s - (time.monotonic() - went_away)))
        proxy.restore()
        thread.join(60)
        check_all_delivered_once(stack, slow_smtp, prefix, [answer["response"], late],
                                 f"RabbitMQ unreachable {outage_s} s mid-send")
        check_alive(stack)
        check_one_line_each_way(log_lines(stack, "worker"), "broker")
        figure("reliability", f"RabbitMQ unreachable {outage_s} s mid-send: {USERS} in flight "
               f"+ {LATE} accepted while away; all final, lost=0, repeated=0, "
               f"processes restarted=0")
    finally:
        stack.stop()
