"""Shared fixtures: one live Herald (API + worker processes) on real Postgres and Redis,
with provider fakes on 127.0.0.1, used by the tests through boto3."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from tests.fakes.smtp import FakeSmtp
from tests.stack import Stack, pinpoint


@pytest.fixture(scope="session")
def smtp() -> Iterator[FakeSmtp]:
    server = FakeSmtp(username="herald", password="s3cret").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def stack(smtp: FakeSmtp) -> Iterator[Stack]:
    herald = Stack("main", env={"HERALD_SMTP_URL": smtp.url})
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
