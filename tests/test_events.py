"""PutEvents and GetInAppMessages through boto3, as the Amplify and mobile SDKs call them."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import Engine, text

ACCEPTED = {"StatusCode": 202, "Message": "Accepted"}


def event(event_type: str = "_session.start", **members: Any) -> dict[str, Any]:
    return {"EventType": event_type, "Timestamp": "2026-12-01T10:00:00.000Z", **members}


def put(client: Any, app_id: str, items: dict[str, Any]) -> dict[str, Any]:
    response = client.put_events(ApplicationId=app_id, EventsRequest={"BatchItem": items})
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    results: dict[str, Any] = response["EventsResponse"]["Results"]
    return results


def test_events_are_accepted_stored_and_upsert_their_endpoint(
    client: Any, app_id: str, db: Engine
) -> None:
    results = put(client, app_id, {"device-1": {
        "Endpoint": {"ChannelType": "GCM", "Address": "token-1",
                     "Attributes": {"plan": ["pro"]}, "User": {"UserId": "ada"}},
        "Events": {
            "e1": event("_session.start", Session={
                "Id": "s-1", "StartTimestamp": "2026-12-01T10:00:00.000Z"}),
            "e2": event("purchase", Attributes={"sku": "A-1"}, Metrics={"price": 9.5}),
        },
    }})
    assert results == {"device-1": {"EndpointItemResponse": ACCEPTED,
                                    "EventsItemResponse": {"e1": ACCEPTED, "e2": ACCEPTED}}}
    endpoint = client.get_endpoint(ApplicationId=app_id, EndpointId="device-1")["EndpointResponse"]
    assert endpoint["Address"] == "token-1" and endpoint["User"]["UserId"] == "ada"
    assert endpoint["Attributes"] == {"plan": ["pro"]}
    with db.connect() as conn:
        rows = conn.execute(text(
            "SELECT endpoint_id, event_id, event_type, attributes, metrics, session, event,"
            " event_timestamp, forwarded_at FROM app_events WHERE app_id = :a ORDER BY id"
        ), {"a": app_id}).all()
    assert [(r.endpoint_id, r.event_id, r.event_type) for r in rows] == [
        ("device-1", "e1", "_session.start"), ("device-1", "e2", "purchase")]
    assert rows[0].session == {"Id": "s-1", "StartTimestamp": "2026-12-01T10:00:00.000Z"}
    assert rows[1].attributes == {"sku": "A-1"} and rows[1].metrics == {"price": 9.5}
    assert rows[1].event["EventType"] == "purchase"  # the event as sent, for the stream
    assert rows[1].event_timestamp.isoformat() == "2026-12-01T10:00:00+00:00"
    assert all(r.forwarded_at is None for r in rows)  # waiting in the outbox


def test_an_invalid_item_or_event_gets_its_own_400_and_the_rest_go_on(
    client: Any, app_id: str, db: Engine
) -> None:
    results = put(client, app_id, {
        "good": {"Endpoint": {"ChannelType": "APNS", "Address": "tok"},
                 "Events": {"ok": event(), "late": event(Timestamp="yesterday"),
                            "long": event("x" * 51)}},
        "bad-endpoint": {"Endpoint": {"ChannelType": "APNS", "OptOut": "SOMETIMES"},
                         "Events": {"still": event()}},
        "no-channel": {"Endpoint": {"Address": "tok-2"}, "Events": {}},
        "x" * 129: {"Endpoint": {"ChannelType": "APNS", "Address": "tok-3"},
                    "Events": {"orphan": event()}},
    })
    too_long = results["x" * 129]
    assert too_long["EndpointItemResponse"]["StatusCode"] == 400
    assert too_long["EventsItemResponse"]["orphan"]["StatusCode"] == 400
    good = results["good"]
    assert good["EndpointItemResponse"] == ACCEPTED
    assert good["EventsItemResponse"]["ok"] == ACCEPTED
    assert good["EventsItemResponse"]["late"]["StatusCode"] == 400
    assert "ISO 8601" in good["EventsItemResponse"]["late"]["Message"]
    assert good["EventsItemResponse"]["long"]["StatusCode"] == 400
    assert "EventType" in good["EventsItemResponse"]["long"]["Message"]
    bad = results["bad-endpoint"]
    assert bad["EndpointItemResponse"]["StatusCode"] == 400
    assert "OptOut" in bad["EndpointItemResponse"]["Message"]
    assert bad["EventsItemResponse"] == {"still": ACCEPTED}
    assert results["no-channel"]["EndpointItemResponse"]["StatusCode"] == 400
    assert "ChannelType" in results["no-channel"]["EndpointItemResponse"]["Message"]
    # The refused endpoints were not written; the accepted one was.
    client.get_endpoint(ApplicationId=app_id, EndpointId="good")
    for missing in ("bad-endpoint", "no-channel"):
        with pytest.raises(ClientError) as caught:
            client.get_endpoint(ApplicationId=app_id, EndpointId=missing)
        assert caught.value.response["Error"]["Code"] == "NotFoundException"
    with db.connect() as conn:
        stored = conn.execute(text(
            "SELECT endpoint_id, event_id FROM app_events WHERE app_id = :a ORDER BY id"
        ), {"a": app_id}).all()
    assert [tuple(r) for r in stored] == [("good", "ok"), ("bad-endpoint", "still")]


def test_a_request_invalid_as_a_whole_is_400_and_stores_nothing(
    client: Any, app_id: str, db: Engine
) -> None:
    too_many = {f"d{i}": {"Endpoint": {}, "Events": {f"e{i}-{j}": event() for j in range(2)}}
                for i in range(51)}  # 102 events: over Pinpoint's 100 per request
    for items in ({}, too_many):
        with pytest.raises(ClientError) as caught:
            client.put_events(ApplicationId=app_id, EventsRequest={"BatchItem": items})
        assert caught.value.response["Error"]["Code"] == "BadRequestException"
    with db.connect() as conn:
        count = conn.execute(text("SELECT count(*) FROM app_events WHERE app_id = :a"),
                             {"a": app_id}).scalar()
    assert count == 0
    with pytest.raises(ClientError) as caught:
        client.put_events(ApplicationId="0" * 32, EventsRequest={"BatchItem": {
            "d": {"Endpoint": {}, "Events": {"e": event()}}}})
    assert caught.value.response["Error"]["Code"] == "NotFoundException"


def test_in_app_messages_are_an_empty_list(client: Any, app_id: str) -> None:
    response = client.get_in_app_messages(ApplicationId=app_id, EndpointId="device-1")
    assert response["InAppMessagesResponse"] == {"InAppMessageCampaigns": []}
    with pytest.raises(ClientError) as caught:
        client.get_in_app_messages(ApplicationId="0" * 32, EndpointId="device-1")
    assert caught.value.response["Error"]["Code"] == "NotFoundException"
