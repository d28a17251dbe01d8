"""Application settings and tags (DESIGN.md §8), through boto3 as Terraform's aws_pinpoint_app
drives them."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.stack import ROOT_KEY_ID, ROOT_SECRET, Stack, pinpoint
from tests.test_security import create_key


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    response = exc.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


def test_terraform_aws_pinpoint_app_lifecycle(client: Any) -> None:
    created = client.create_app(CreateApplicationRequest={
        "Name": "tf-app", "tags": {"env": "prod", "team": "growth"}})["ApplicationResponse"]
    app_id, arn = created["Id"], created["Arn"]
    assert created["tags"] == {"env": "prod", "team": "growth"}

    read = client.get_app(ApplicationId=app_id)["ApplicationResponse"]
    assert read["tags"] == {"env": "prod", "team": "growth"} and read["Arn"] == arn

    settings = client.get_application_settings(ApplicationId=app_id)[
        "ApplicationSettingsResource"]
    # Terraform dereferences these three without nil checks.
    assert settings["CampaignHook"] == {} and settings["Limits"] == {}
    assert settings["QuietTime"] == {}
    assert settings["ApplicationId"] == app_id and settings["LastModifiedDate"]

    assert client.list_tags_for_resource(ResourceArn=arn)["TagsModel"] == {
        "tags": {"env": "prod", "team": "growth"}}

    # What the provider writes for campaign_hook, limits and quiet_time blocks.
    updated = client.update_application_settings(ApplicationId=app_id,
                                                 WriteApplicationSettingsRequest={
        "CampaignHook": {"LambdaFunctionName": "", "Mode": "", "WebUrl": ""},
        "Limits": {"Daily": 0, "MaximumDuration": 60, "MessagesPerSecond": 1, "Total": 0},
        "QuietTime": {"Start": "22:00", "End": "06:30"},
    })["ApplicationSettingsResource"]
    assert updated["Limits"]["MessagesPerSecond"] == 1
    assert updated["QuietTime"] == {"Start": "22:00", "End": "06:30"}
    assert updated["CampaignHook"]["WebUrl"] == ""

    again = client.get_application_settings(ApplicationId=app_id)[
        "ApplicationSettingsResource"]
    assert again["Limits"] == updated["Limits"] and again["QuietTime"] == updated["QuietTime"]
    assert client.get_app(ApplicationId=app_id)["ApplicationResponse"]["tags"] == {
        "env": "prod", "team": "growth"}

    deleted = client.delete_app(ApplicationId=app_id)["ApplicationResponse"]
    assert deleted["tags"] == {"env": "prod", "team": "growth"}
    with pytest.raises(ClientError) as gone:
        client.list_tags_for_resource(ResourceArn=arn)
    assert _code(gone) == (404, "NotFoundException")
    with pytest.raises(ClientError) as no_settings:
        client.get_application_settings(ApplicationId=app_id)
    assert _code(no_settings) == (404, "NotFoundException")


def test_a_settings_update_merges_the_members_it_sends(client: Any, app_id: str) -> None:
    client.update_application_settings(ApplicationId=app_id, WriteApplicationSettingsRequest={
        "Limits": {"Daily": 5}, "EventTaggingEnabled": True,
        "JourneyLimits": {"DailyCap": 3, "TimeframeCap": {"Cap": 2, "Days": 7}}})
    first = client.get_application_settings(ApplicationId=app_id)[
        "ApplicationSettingsResource"]["LastModifiedDate"]
    merged = client.update_application_settings(ApplicationId=app_id,
                                                WriteApplicationSettingsRequest={
        "QuietTime": {"Start": "01:00", "End": "02:00"}, "CloudWatchMetricsEnabled": False,
    })["ApplicationSettingsResource"]
    assert merged["Limits"] == {"Daily": 5}
    assert merged["JourneyLimits"] == {"DailyCap": 3, "TimeframeCap": {"Cap": 2, "Days": 7}}
    assert merged["QuietTime"] == {"Start": "01:00", "End": "02:00"}
    assert merged["LastModifiedDate"] >= first


@pytest.mark.parametrize("request_body", [
    {"QuietTime": {"Start": "25:00"}},
    {"Limits": {"Daily": -1}},
    {"Limits": {"Daily": "5"}},
    {"CampaignHook": {"Mode": "SOMETIMES"}},
    {"EventTaggingEnabled": "yes"},
])
def test_bad_settings_are_refused_and_change_nothing(
    api_url: str, client: Any, app_id: str, request_body: dict[str, Any]
) -> None:
    client.update_application_settings(ApplicationId=app_id,
                                       WriteApplicationSettingsRequest={"Limits": {"Daily": 7}})
    # botocore checks types before sending; the server must refuse what gets past a client
    # that does not.
    unchecked = boto3.client(
        "pinpoint", endpoint_url=api_url, region_name="us-east-1",
        aws_access_key_id=ROOT_KEY_ID, aws_secret_access_key=ROOT_SECRET,
        config=Config(parameter_validation=False, retries={"max_attempts": 1}))
    with pytest.raises(ClientError) as refused:
        unchecked.update_application_settings(ApplicationId=app_id,
                                              WriteApplicationSettingsRequest=request_body)
    assert _code(refused) == (400, "BadRequestException")
    assert client.get_application_settings(ApplicationId=app_id)[
        "ApplicationSettingsResource"]["Limits"] == {"Daily": 7}


def test_tag_untag_and_list(client: Any) -> None:
    arn = client.create_app(CreateApplicationRequest={"Name": "tags"})[
        "ApplicationResponse"]["Arn"]
    first = client.tag_resource(ResourceArn=arn, TagsModel={"tags": {"a": "1", "b": "2",
                                                                     "c": "3"}})
    assert first["ResponseMetadata"]["HTTPStatusCode"] == 204
    client.tag_resource(ResourceArn=arn, TagsModel={"tags": {"a": "one"}})
    removed = client.untag_resource(ResourceArn=arn, TagKeys=["b", "c", "absent"])
    assert removed["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert client.list_tags_for_resource(ResourceArn=arn)["TagsModel"] == {"tags": {"a": "one"}}
    apps = client.get_apps(PageSize="1000")["ApplicationsResponse"]["Item"]
    assert [a["tags"] for a in apps if a["Arn"] == arn] == [{"a": "one"}]


@pytest.mark.parametrize("arn, status", [
    ("arn:aws:mobiletargeting:us-east-1:000000000000:apps/" + "0" * 32, 404),
    ("arn:aws:mobiletargeting:eu-west-1:000000000000:apps/APP", 404),
    ("arn:aws:mobiletargeting:us-east-1:123456789012:apps/APP", 404),
    ("arn:aws:mobiletargeting:us-east-1:000000000000:templates/x/EMAIL", 400),
    ("not-an-arn", 400),
])
def test_tags_on_what_is_not_an_app_here_are_pinpoint_errors(
    client: Any, app_id: str, arn: str, status: int
) -> None:
    with pytest.raises(ClientError) as refused:
        client.list_tags_for_resource(ResourceArn=arn.replace("APP", app_id))
    assert _code(refused)[0] == status
    assert refused.value.response["Error"]["Code"] in ("NotFoundException",
                                                        "BadRequestException")


def test_a_scoped_key_tags_only_its_own_apps(stack: Stack, api_url: str, client: Any) -> None:
    mine = client.create_app(CreateApplicationRequest={"Name": "mine"})["ApplicationResponse"]
    other = client.create_app(CreateApplicationRequest={"Name": "other", "tags": {"k": "v"}})[
        "ApplicationResponse"]
    scoped = pinpoint(api_url, *create_key(stack, mine["Id"]))
    scoped.tag_resource(ResourceArn=mine["Arn"], TagsModel={"tags": {"x": "y"}})
    for call in (
        lambda: scoped.tag_resource(ResourceArn=other["Arn"], TagsModel={"tags": {"x": "y"}}),
        lambda: scoped.untag_resource(ResourceArn=other["Arn"], TagKeys=["k"]),
        lambda: scoped.list_tags_for_resource(ResourceArn=other["Arn"]),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert _code(refused) == (403, "ForbiddenException")
    assert client.list_tags_for_resource(ResourceArn=other["Arn"])["TagsModel"] == {
        "tags": {"k": "v"}}


def test_bad_tags_are_refused(client: Any, app_id: str) -> None:
    arn = client.get_app(ApplicationId=app_id)["ApplicationResponse"]["Arn"]
    for tags in ({"aws:owner": "x"}, {"k" * 129: "v"}, {"k": "v" * 257},
                 {f"t{i}": "v" for i in range(51)}):
        with pytest.raises(ClientError) as refused:
            client.tag_resource(ResourceArn=arn, TagsModel={"tags": tags})
        assert _code(refused) == (400, "BadRequestException")
    assert client.list_tags_for_resource(ResourceArn=arn)["TagsModel"] == {"tags": {}}
