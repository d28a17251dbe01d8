"""The SMTP adapter against the fake SMTP server: the StatusCode of a send that got no answer.

Everything else SMTP does is tested end to end, through boto3 (``test_send_users.py``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.fakes.http import unused_port
from tests.fakes.smtp import HANG, FakeSmtp
from tests.providers import channel_config, provider_settings, send_one
from worker.providers.base import Delivery, DeliveryStatus, EmailContent
from worker.providers.smtp import SmtpProvider

TO = "ada@example.com"
CHANNEL = channel_config("EMAIL")


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    server = FakeSmtp().start()
    yield server
    server.stop()


def email() -> Delivery:
    content = EmailContent(subject="Hello", text="World", from_address="hello@example.com")
    return Delivery(str(uuid.uuid4()), "EMAIL", TO, content)


def test_no_answer_in_time_is_a_timeout(smtp: FakeSmtp) -> None:
    smtp.script(TO, [HANG])
    provider = SmtpProvider(provider_settings(smtp_url=smtp.url, provider_timeout_s=0.3))
    started = time.monotonic()
    outcome = send_one(provider, email(), CHANNEL)
    assert time.monotonic() - started < 3
    assert outcome.status is DeliveryStatus.TIMEOUT
    assert outcome.status_code == 504


def test_unreachable_server_is_a_temporary_failure() -> None:
    provider = SmtpProvider(provider_settings(smtp_url=f"smtp://127.0.0.1:{unused_port()}"))
    outcome = send_one(provider, email(), CHANNEL)
    assert outcome.status is DeliveryStatus.TEMPORARY_FAILURE
    assert outcome.status_code == 503
    assert "SMTP connection failed" in outcome.status_message
