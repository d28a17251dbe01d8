"""Rendering bounds end to end (issue 14): the poison pill against a real ``herald worker``,
and the intake limits on substitutions, through boto3 as users call Herald."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.fakes.smtp import FakeSmtp
from tests.stack import Stack, pinpoint
from tests.test_reliability import all_final, final_rows, wait_until
from tests.test_send_users import register, send
from worker.delivery.render_limits import MAX_SUBSTITUTION_CHARS, MAX_SUBSTITUTION_KEYS

pytestmark = pytest.mark.slow


def test_poison_pill_fails_its_rows_and_the_worker_lives(smtp: FakeSmtp) -> None:
    """The exact request of the issue: a 5.7 MB body asking for 10¹² characters. It used to
    raise MemoryError, which killed the worker — and then each worker it was redelivered to."""
    stack = Stack("poison", env={"HERALD_SMTP_URL": smtp.url, "HERALD_LEASE_S": "4",
                                 "HERALD_RECOVERY_GRACE_S": "2",
                                 "HERALD_SWEEP_INTERVAL_S": "0.5"})
    try:
        worker = stack.start_worker(concurrency=1)
        client = pinpoint(stack.start_api())
        app_id = client.create_app(CreateApplicationRequest={"Name": "poison"})[
            "ApplicationResponse"]["Id"]
        client.update_email_channel(ApplicationId=app_id, EmailChannelRequest={
            "FromAddress": "ops@herald.test", "Identity": "herald.test"})
        register(client, app_id, {
            "victim": {"ChannelType": "EMAIL", "Address": "victim@herald.test",
                       "User": {"UserId": "victim"}},
            "next": {"ChannelType": "EMAIL", "Address": "next@herald.test",
                     "User": {"UserId": "next"}},
        })
        stack.wait_worker_ready()

        response = send(client, app_id, {
            "MessageConfiguration": {"DefaultMessage": {
                "Body": "{{A}}" * 1_000_000, "Substitutions": {"A": ["x" * 1_000_000]}}},
            "Users": {"victim": {}}})

        wait_until(all_final(stack.database_url, response["RequestId"], 1), 60,
                   "the poisoned row final")
        [row] = final_rows(stack.database_url, response["RequestId"])
        assert row.delivery_status == "PERMANENT_FAILURE"
        answer = response["Result"]["victim"]["victim"]
        assert (answer["DeliveryStatus"], answer["StatusCode"]) == ("PERMANENT_FAILURE", 400)
        assert "would exceed 10,485,760 characters" in answer["StatusMessage"]
        assert worker.poll() is None, "the worker died"
        assert "victim@herald.test" not in smtp.count_by_recipient()

        later = send(client, app_id, {
            "MessageConfiguration": {"DefaultMessage": {"Body": "still here"}},
            "Users": {"next": {}}})
        assert later["Result"]["next"]["next"]["DeliveryStatus"] == "SUCCESSFUL"
        assert worker.poll() is None
    finally:
        stack.stop()


def _refused(client: Any, app_id: str, request: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ClientError) as caught:
        send(client, app_id, request)
    return caught.value.response  # type: ignore[no-any-return]


def _requests_of(db: Engine, app_id: str) -> int:
    with db.connect() as conn:
        return int(conn.execute(text("select count(*) from message_requests where app_id = :a"),
                                {"a": app_id}).scalar_one())


def test_substitutions_are_bounded_at_intake(client: Any, email_app: str, db: Engine) -> None:
    register(client, email_app, {"e": {"ChannelType": "EMAIL", "Address": "e@herald.test",
                                       "User": {"UserId": "u"}}})
    # Spread over the message and the users: the limits are per request.
    per_user = MAX_SUBSTITUTION_KEYS // 4
    too_many = {
        "MessageConfiguration": {"DefaultMessage": {"Body": "{{k1}}", "Substitutions": {
            f"k{i}": ["v"] for i in range(per_user + 1)}}},
        "Users": {f"u{n}": {"Substitutions": {f"k{i}": ["v"] for i in range(per_user)}}
                  for n in range(3)},
    }
    answer = _refused(client, email_app, too_many)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert answer["Error"]["Code"] == "BadRequestException"
    assert answer["Error"]["Message"] == (
        f"The request's Substitutions hold {MAX_SUBSTITUTION_KEYS + 1:,} keys; at most "
        f"{MAX_SUBSTITUTION_KEYS:,} are allowed per request")

    half = MAX_SUBSTITUTION_CHARS // 2
    too_large = {"MessageConfiguration": {"DefaultMessage": {
        "Body": "{{A}}", "Substitutions": {"A": ["a" * half, "b" * half]}}},
        "Users": {"u": {}}}
    answer = _refused(client, email_app, too_large)
    assert answer["Error"]["Code"] == "BadRequestException"
    assert f"at most {MAX_SUBSTITUTION_CHARS:,} are allowed per request" in answer[
        "Error"]["Message"]
    assert _requests_of(db, email_app) == 0  # refused before anything was written

    at_the_limits = {"MessageConfiguration": {"DefaultMessage": {
        "Body": "{{A}}", "Substitutions": {"A": ["a" * (half - 100)]}}},
        "Users": {"u": {"Substitutions": {f"k{i}": [""] for i in range(
            MAX_SUBSTITUTION_KEYS - 1)}}}}
    result = send(client, email_app, at_the_limits)["Result"]["u"]["e"]
    assert result["DeliveryStatus"] == "SUCCESSFUL"
