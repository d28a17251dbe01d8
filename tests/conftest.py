"""Shared fixtures: one live Herald (API + worker processes) on real Postgres and Redis,
with provider fakes on 127.0.0.1, used by the tests through boto3."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from tests.fakes.adm import FakeAdm
from tests.fakes.apns import FakeApns
from tests.fakes.baidu import FakeBaidu
from tests.fakes.fcm import FakeFcm
from tests.fakes.smtp import FakeSmtp
from tests.fakes.twilio import FakeTwilio
from tests.stack import ARTIFACTS, Stack, pinpoint

BUNDLE_ID = "com.example.herald"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow fault-injection tests first, the longest (those given a longer timeout) before
    the rest, so that in a parallel run they overlap everything else instead of ending it."""

    def order(item: pytest.Item) -> tuple[bool, float]:
        timeout = item.get_closest_marker("timeout")
        return item.get_closest_marker("slow") is None, -float(timeout.args[0] if timeout else 0)

    items.sort(key=order)


@pytest.fixture(scope="session")
def smtp() -> Iterator[FakeSmtp]:
    server = FakeSmtp(username="herald", password="s3cret").start()
    yield server
    server.stop()


@dataclass
class Fakes:
    """Every provider, speaking its protocol on 127.0.0.1."""

    apns: FakeApns
    apns_sandbox: FakeApns
    fcm: FakeFcm
    adm: FakeAdm
    baidu: FakeBaidu
    twilio: FakeTwilio


@pytest.fixture(scope="session")
def fakes() -> Iterator[Fakes]:
    apns, apns_sandbox = FakeApns(BUNDLE_ID), FakeApns(BUNDLE_ID)
    servers = Fakes(apns, apns_sandbox, FakeFcm(), FakeAdm(), FakeBaidu(), FakeTwilio())
    for server in (apns, apns_sandbox, servers.fcm, servers.adm, servers.baidu, servers.twilio):
        server.start()
    yield servers
    for server in (apns, apns_sandbox, servers.fcm, servers.adm, servers.baidu, servers.twilio):
        server.stop()


def provider_env(smtp: FakeSmtp, fakes: Fakes) -> dict[str, str]:
    return {
        "HERALD_SMTP_URL": smtp.url,
        "HERALD_APNS_URL": fakes.apns.url,
        "HERALD_APNS_SANDBOX_URL": fakes.apns_sandbox.url,
        "HERALD_CA_BUNDLE": str(fakes.apns.ca_path),
        "HERALD_FCM_URL": fakes.fcm.base_url,
        "HERALD_FCM_TOKEN_URL": fakes.fcm.token_url,
        "HERALD_ADM_URL": fakes.adm.base_url,
        "HERALD_BAIDU_URL": fakes.baidu.base_url,
        "HERALD_TWILIO_URL": fakes.twilio.url,
        "HERALD_TWILIO_ACCOUNT_SID": fakes.twilio.account_sid,
        "HERALD_TWILIO_AUTH_TOKEN": fakes.twilio.auth_token,
        "HERALD_DEFAULT_ORIGINATION_NUMBER": "+15550009999",
        "HERALD_RETRY_BASE_DELAY_S": "0.2",
    }


@pytest.fixture(scope="session")
def stack(smtp: FakeSmtp, fakes: Fakes) -> Iterator[Stack]:
    ARTIFACTS.mkdir(exist_ok=True)
    herald = Stack("main", env=provider_env(smtp, fakes))
    try:
        herald.start_worker()
        herald.start_api()
        yield herald
    finally:
        herald.stop()


@pytest.fixture(scope="session")
def api_url(stack: Stack) -> str:
    return stack.apis[0][1]


@pytest.fixture(scope="session")
def client(api_url: str) -> Any:
    return pinpoint(api_url)


@pytest.fixture(scope="session")
def db(stack: Stack) -> Iterator[Engine]:
    engine = create_engine(stack.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def app_id(client: Any) -> str:
    """A fresh application per test: tests never see each other's data."""
    response = client.create_app(CreateApplicationRequest={"Name": f"t-{uuid.uuid4().hex[:8]}"})
    return str(response["ApplicationResponse"]["Id"])


@pytest.fixture
def email_app(client: Any, app_id: str) -> str:
    client.update_email_channel(
        ApplicationId=app_id,
        EmailChannelRequest={"FromAddress": "news@herald.test", "Identity": "herald.test",
                             "Enabled": True},
    )
    return app_id
