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
from worker.core.vocabulary import DeliveryStatus, EmailContent, OutgoingMessage
from worker.providers.smtp import SmtpProvider

TO = "ada@example.com"
CHANNEL = channel_config("EMAIL")


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    server = FakeSmtp().start()
    yield server
    server.stop()


def email() -> OutgoingMessage:
    content = EmailContent(subject="Hello", text="World", from_address="hello@example.com")
    return OutgoingMessage(str(uuid.uuid4()), "EMAIL", TO, content)


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


# --- TLS and credentials (issue 14) ----------------------------------------------------------


def _credentials_url(server: FakeSmtp, query: str = "") -> str:
    return f"smtp://herald:s3cret@127.0.0.1:{server.port}{query}"


def test_credentials_go_over_starttls_whenever_the_server_offers_it() -> None:
    server = FakeSmtp(username="herald", password="s3cret", starttls=True).start()
    try:
        provider = SmtpProvider(provider_settings(smtp_url=_credentials_url(server),
                                                  ca_bundle=server.ca_path))
        outcome = send_one(provider, email(), CHANNEL)
    finally:
        server.stop()
    assert outcome.status is DeliveryStatus.SUCCESSFUL, outcome.status_message
    assert server.auth_over_tls == [True]
    assert [r.tls for r in server.received] == [True]


def test_credentials_are_not_sent_in_clear_when_no_starttls_is_offered() -> None:
    server = FakeSmtp(username="herald", password="s3cret").start()
    try:
        provider = SmtpProvider(provider_settings(smtp_url=_credentials_url(server)))
        outcome = send_one(provider, email(), CHANNEL)
    finally:
        server.stop()
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 530
    assert "allow_plain_auth=true" in outcome.status_message
    assert server.auth_over_tls == [] and server.received == []


def test_plain_auth_when_the_operator_opts_in() -> None:
    server = FakeSmtp(username="herald", password="s3cret").start()
    try:
        provider = SmtpProvider(provider_settings(
            smtp_url=_credentials_url(server, "?allow_plain_auth=true")))
        outcome = send_one(provider, email(), CHANNEL)
    finally:
        server.stop()
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert server.auth_over_tls == [False]


def test_mail_without_credentials_is_upgraded_too() -> None:
    server = FakeSmtp(starttls=True).start()
    try:
        provider = SmtpProvider(provider_settings(smtp_url=f"smtp://127.0.0.1:{server.port}",
                                                  ca_bundle=server.ca_path))
        outcome = send_one(provider, email(), CHANNEL)
    finally:
        server.stop()
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert [r.tls for r in server.received] == [True]
