"""The Pinpoint response shapes Herald answers with, next to the request shapes.

Built by ``worker.management`` and ``worker.results`` from rows; the API serialises them with
``to_wire()`` (PascalCase, ``None`` members left out). Members are in the order Herald has always
written them.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from worker.wire.requests import WireModel

# --- applications ------------------------------------------------------------------------


class ApplicationResponse(WireModel):
    arn: str
    id: str
    name: str
    tags: dict[str, str]
    creation_date: str


class ApplicationsResponse(WireModel):
    item: list[ApplicationResponse]
    next_token: str | None = None


class ApplicationSettingsResource(WireModel):
    """An app's settings as stored. ``CampaignHook``, ``Limits`` and ``QuietTime`` are always
    objects, empty until set: Terraform's aws_pinpoint_app reads them without nil checks.
    ``CloudWatchMetricsEnabled`` and ``EventTaggingEnabled`` are not in the model's resource
    shape; they are answered as written so a client can read back what it set."""

    application_id: str
    campaign_hook: dict[str, Any]
    last_modified_date: str
    limits: dict[str, Any]
    quiet_time: dict[str, Any]
    journey_limits: dict[str, Any] | None = None
    cloud_watch_metrics_enabled: bool | None = None
    event_tagging_enabled: bool | None = None


# --- endpoints ---------------------------------------------------------------------------


class EndpointResponse(WireModel):
    """An endpoint as stored: the document members are the client's, as it sent them."""

    address: str | None = None
    application_id: str
    attributes: dict[str, Any]
    channel_type: str
    cohort_id: str
    creation_date: str
    demographic: dict[str, Any]
    effective_date: Any
    endpoint_status: str
    id: str
    location: dict[str, Any]
    metrics: dict[str, Any]
    opt_out: str | None = None
    request_id: str | None = None
    user: dict[str, Any]


class EndpointsResponse(WireModel):
    item: list[EndpointResponse]


class MessageBody(WireModel):
    """The answer to an accepted endpoint update."""

    message: str
    request_id: str = Field(alias="RequestID")  # sic: Pinpoint's MessageBody spells it so


# --- channels ----------------------------------------------------------------------------


class ChannelResponse(WireModel):
    """Any channel's response: the members common to all, then those of its type."""

    application_id: str
    creation_date: str
    enabled: bool
    has_credential: bool
    id: str
    is_archived: bool
    last_modified_by: str
    last_modified_date: str
    platform: str
    version: int
    # APNs and GCM
    has_token_key: bool | None = None
    has_fcm_service_credentials: bool | None = None
    default_authentication_method: str | None = None
    # Baidu
    credential: str | None = None
    # e-mail
    from_address: str | None = None
    identity: str | None = None
    configuration_set: str | None = None
    role_arn: str | None = None
    orchestration_sending_role_arn: str | None = None
    messages_per_second: int | None = None
    # SMS
    sender_id: str | None = None
    short_code: str | None = None
    promotional_messages_per_second: int | None = None
    transactional_messages_per_second: int | None = None


class ChannelsResponse(WireModel):
    channels: dict[str, ChannelResponse]


# --- send results ------------------------------------------------------------------------


class MessageResult(WireModel):
    """One recipient's result. ``attempts`` and ``final`` are Herald's results extension
    (DESIGN.md §3), present only when a send is read back."""

    delivery_status: str
    status_code: int
    message_id: str | None = None
    status_message: str | None = None
    updated_token: str | None = None
    attempts: int | None = None
    final: bool | None = None


class EndpointMessageResult(MessageResult):
    address: str


class SendUsersMessageResponse(WireModel):
    application_id: str
    request_id: str
    result: dict[str, dict[str, EndpointMessageResult]]


class MessageResponse(WireModel):
    application_id: str
    request_id: str
    result: dict[str, MessageResult] | None = None
    endpoint_result: dict[str, EndpointMessageResult] | None = None


# --- events, in-app messages, phone numbers, one-time passwords ----------------------------


class ItemStatus(WireModel):
    """``EndpointItemResponse`` and ``EventItemResponse``: the same two members."""

    message: str
    status_code: int


class ItemResponse(WireModel):
    endpoint_item_response: ItemStatus | None = None
    events_item_response: dict[str, ItemStatus] | None = None


class EventsResponse(WireModel):
    results: dict[str, ItemResponse]


class InAppMessagesResponse(WireModel):
    in_app_message_campaigns: list[dict[str, Any]]


class NumberValidateResponse(WireModel):
    carrier: str | None = None
    city: str | None = None
    cleansed_phone_number_e164: str | None = Field(None, alias="CleansedPhoneNumberE164")
    cleansed_phone_number_national: str | None = None
    country: str | None = None
    country_code_iso2: str | None = Field(None, alias="CountryCodeIso2")
    country_code_numeric: str | None = None
    county: str | None = None
    original_country_code_iso2: str | None = Field(None, alias="OriginalCountryCodeIso2")
    original_phone_number: str | None = None
    phone_type: str
    phone_type_code: int
    timezone: str | None = None
    zip_code: str | None = None


class VerificationResponse(WireModel):
    valid: bool
