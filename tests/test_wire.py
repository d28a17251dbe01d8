"""DESIGN.md §3 wire rules, through boto3 (and the AWS CLI): path labels are one segment
however encoded, endpoint ids are case-insensitive, ARNs carry the signed region, and an
operation Herald lacks says so by name."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.stack import Stack, pinpoint
from tests.test_security import _aws, create_key, signed_headers


def _endpoint(address: str = "someone@herald.test", user: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"ChannelType": "EMAIL", "Address": address}
    if user is not None:
        request["User"] = {"UserId": user}
    return request


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = exc.value.response
    return (response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"],
            response["Error"]["Message"])


def test_ids_containing_a_slash_are_read_updated_and_deleted(client: Any, app_id: str) -> None:
    client.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": [
        {"Id": "dev/1", **_endpoint("a@herald.test", "team/alice")}]})
    got = client.get_endpoint(ApplicationId=app_id, EndpointId="dev/1")["EndpointResponse"]
    assert got["Id"] == "dev/1" and got["User"]["UserId"] == "team/alice"
    client.update_endpoint(ApplicationId=app_id, EndpointId="dev/1",
                           EndpointRequest={"Attributes": {"k": ["v"]}})
    users = client.get_user_endpoints(ApplicationId=app_id, UserId="team/alice")
    assert [e["Attributes"] for e in users["EndpointsResponse"]["Item"]] == [{"k": ["v"]}]
    # An id that is a prefix of the slashed one is not it.
    with pytest.raises(ClientError) as missing:
        client.get_endpoint(ApplicationId=app_id, EndpointId="dev")
    assert _error(missing) == (404, "NotFoundException", "Resource not found")
    client.delete_endpoint(ApplicationId=app_id, EndpointId="dev/1")
    with pytest.raises(ClientError):
        client.get_endpoint(ApplicationId=app_id, EndpointId="dev/1")


def test_user_ids_containing_a_slash_route_to_delete_user_endpoints(
    client: Any, app_id: str
) -> None:
    client.update_endpoint(ApplicationId=app_id, EndpointId="e1",
                           EndpointRequest=_endpoint(user="org/42"))
    deleted = client.delete_user_endpoints(ApplicationId=app_id, UserId="org/42")
    assert [e["Id"] for e in deleted["EndpointsResponse"]["Item"]] == ["e1"]


def test_aws_cli_reads_an_endpoint_whose_id_contains_a_slash(
    stack: Stack, api_url: str, client: Any, app_id: str, tmp_path: Any
) -> None:
    client.update_endpoint(ApplicationId=app_id, EndpointId="cli/ep",
                           EndpointRequest=_endpoint("cli@herald.test"))
    key_id, secret = create_key(stack, app_id)
    got = _aws(api_url, key_id, secret, tmp_path, "get-endpoint", "--application-id", app_id,
               "--endpoint-id", "cli/ep")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["EndpointResponse"]["Address"] == "cli@herald.test"


def test_endpoint_ids_are_case_insensitive_and_keep_their_created_case(
    client: Any, app_id: str
) -> None:
    client.update_endpoint(ApplicationId=app_id, EndpointId="Ep-1",
                           EndpointRequest=_endpoint("first@herald.test", "u1"))
    client.update_endpoint(ApplicationId=app_id, EndpointId="ep-1",
                           EndpointRequest={"Address": "second@herald.test"})
    client.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": [
        {"Id": "EP-1", "Attributes": {"a": ["1"]}}, {"Id": "eP-1", "Attributes": {"b": ["2"]}},
    ]})
    got = client.get_endpoint(ApplicationId=app_id, EndpointId="EP-1")["EndpointResponse"]
    assert got["Id"] == "Ep-1"
    assert got["Address"] == "second@herald.test"
    assert got["Attributes"] == {"a": ["1"], "b": ["2"]}
    users = client.get_user_endpoints(ApplicationId=app_id, UserId="u1")
    assert [e["Id"] for e in users["EndpointsResponse"]["Item"]] == ["Ep-1"]
    sent = client.send_messages(ApplicationId=app_id, MessageRequest={
        "Endpoints": {"eP-1": {}},
        "MessageConfiguration": {"DefaultMessage": {"Body": "hi"}},
    })["MessageResponse"]["EndpointResult"]
    # Found (no e-mail channel here, so refused for that, not as an unknown endpoint).
    assert sent["eP-1"]["StatusCode"] != 404, sent
    assert sent["eP-1"]["Address"] == "second@herald.test"
    client.delete_endpoint(ApplicationId=app_id, EndpointId="ep-1")
    with pytest.raises(ClientError) as gone:
        client.get_endpoint(ApplicationId=app_id, EndpointId="Ep-1")
    assert _error(gone)[0] == 404


def test_an_unimplemented_operation_is_named_and_an_unknown_resource_is_not(
    client: Any, app_id: str
) -> None:
    with pytest.raises(ClientError) as campaign:
        client.create_campaign(ApplicationId=app_id, WriteCampaignRequest={"Name": "c"})
    assert _error(campaign) == (404, "NotFoundException",
                                "Herald does not implement CreateCampaign")
    with pytest.raises(ClientError) as segments:
        client.get_segments(ApplicationId=app_id)
    assert _error(segments)[2] == "Herald does not implement GetSegments"
    with pytest.raises(ClientError) as unknown:
        client.get_app(ApplicationId="0" * 32)
    assert _error(unknown) == (404, "NotFoundException", "Resource not found")


def test_an_unknown_path_is_still_resource_not_found(api_url: str) -> None:
    path = "/v1/apps/x/no-such-thing"
    response = httpx.get(api_url + path, headers=signed_headers(api_url, "GET", path))
    assert response.status_code == 404
    assert response.json()["Message"] == "Resource not found"


@pytest.fixture(scope="module")
def any_region() -> Iterator[str]:
    stack = Stack("anyregion", env={"HERALD_REGION": "*"})
    try:
        yield stack.start_api()
    finally:
        stack.stop()


def test_arns_carry_the_region_the_request_was_signed_for(any_region: str) -> None:
    client = pinpoint(any_region, region="eu-west-1")
    created = client.create_app(CreateApplicationRequest={"Name": "r"})["ApplicationResponse"]
    assert created["Arn"] == (
        f"arn:aws:mobiletargeting:eu-west-1:000000000000:apps/{created['Id']}")
    other = pinpoint(any_region, region="ap-south-1")
    read = other.get_app(ApplicationId=created["Id"])["ApplicationResponse"]
    assert read["Arn"].startswith("arn:aws:mobiletargeting:ap-south-1:")
    tags = other.list_tags_for_resource(ResourceArn=read["Arn"])
    assert tags["TagsModel"] == {"tags": {}}


def test_options_on_an_encoded_label_names_the_routes_methods(api_url: str) -> None:
    endpoint = httpx.options(api_url + "/v1/apps/x/endpoints/a%2Fb")
    assert endpoint.status_code == 200
    assert endpoint.headers["Allow"] == "DELETE, GET, OPTIONS, PUT"
    arn = "arn%3Aaws%3Amobiletargeting%3Aus-east-1%3A000000000000%3Aapps%2Fx"
    tags = httpx.options(api_url + "/v1/tags/" + arn)
    assert tags.headers["Allow"] == "DELETE, GET, OPTIONS, POST"
