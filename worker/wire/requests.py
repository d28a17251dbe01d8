"""The Pinpoint wire shapes (botocore's ``pinpoint/2016-12-01`` model), in one place.

Python names are snake_case; the PascalCase wire names are aliases generated here, so this is
the only module that knows them. Requests ignore unknown members, as AWS does. Only members
Herald acts on are typed tightly; every member of the current model is accepted.
"""

from __future__ import annotations

import base64
import binascii
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)
from pydantic.alias_generators import to_pascal

from worker.core.vocabulary import ChannelType

# Wire names that are not the plain PascalCase of their Python name.
_WIRE_NAMES = {
    "apns_push_type": "APNSPushType",
    "md5": "MD5",
    "adm_message": "ADMMessage",
    "apns_message": "APNSMessage",
    "gcm_message": "GCMMessage",
    "sms_message": "SMSMessage",
    "sms_template": "SMSTemplate",
    "tags": "tags",
}


def wire_name(name: str) -> str:
    return _WIRE_NAMES.get(name, to_pascal(name))


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=wire_name, populate_by_name=True, extra="ignore", frozen=True
    )

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Action(StrEnum):
    OPEN_APP = "OPEN_APP"
    DEEP_LINK = "DEEP_LINK"
    URL = "URL"


class MessageType(StrEnum):
    TRANSACTIONAL = "TRANSACTIONAL"
    PROMOTIONAL = "PROMOTIONAL"


Str = StrictStr
StrMap = dict[StrictStr, StrictStr]
Substitutions = dict[StrictStr, list[StrictStr]]


def _decode_blob(value: object) -> object:
    # rest-json blobs travel base64-encoded.
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("must be base64-encoded") from exc
    return value


Blob = Annotated[bytes, BeforeValidator(_decode_blob)]

# --- messages ----------------------------------------------------------------------------


class DefaultMessage(WireModel):
    body: Str | None = None
    substitutions: Substitutions | None = None


class DefaultPushNotificationMessage(WireModel):
    action: Action | None = None
    body: Str | None = None
    data: StrMap | None = None
    silent_push: StrictBool | None = None
    substitutions: Substitutions | None = None
    title: Str | None = None
    url: Str | None = None


class _PushMessage(WireModel):
    action: Action | None = None
    body: Str | None = None
    data: StrMap | None = None
    raw_content: Str | None = None
    silent_push: StrictBool | None = None
    sound: Str | None = None
    substitutions: Substitutions | None = None
    title: Str | None = None
    url: Str | None = None


class APNSMessage(_PushMessage):
    apns_push_type: Str | None = None
    badge: StrictInt | None = None
    category: Str | None = None
    collapse_id: Str | None = None
    media_url: Str | None = None
    preferred_authentication_method: Str | None = None
    priority: Str | None = None
    thread_id: Str | None = None
    time_to_live: StrictInt | None = None


class GCMMessage(_PushMessage):
    collapse_key: Str | None = None
    icon_reference: Str | None = None
    image_icon_url: Str | None = None
    image_url: Str | None = None
    preferred_authentication_method: Str | None = None
    priority: Str | None = None
    restricted_package_name: Str | None = None
    small_image_icon_url: Str | None = None
    time_to_live: StrictInt | None = None


class ADMMessage(_PushMessage):
    consolidation_key: Str | None = None
    expires_after: Str | None = None
    icon_reference: Str | None = None
    image_icon_url: Str | None = None
    image_url: Str | None = None
    md5: Str | None = None
    small_image_icon_url: Str | None = None


class BaiduMessage(_PushMessage):
    icon_reference: Str | None = None
    image_icon_url: Str | None = None
    image_url: Str | None = None
    small_image_icon_url: Str | None = None
    time_to_live: StrictInt | None = None


class SimpleEmailPart(WireModel):
    charset: Str | None = None
    data: Str | None = None


# RFC 5322 §2.2: a field name is printable US-ASCII (33-126) except ":". Anything else — a
# space, a colon, a line break — lets a name smuggle in another header ("To: x, X-A").
_FIELD_NAME = re.compile(r"[!-9;-~]+")
# Headers Herald writes itself, or that say who the message is from or for, or how its body
# is encoded: a tenant setting them could send to someone else or as someone else.
RESERVED_HEADERS = frozenset({
    "to", "from", "cc", "bcc", "subject", "date", "message-id", "sender", "reply-to",
    "return-path", "mime-version", "received", "dkim-signature", "delivered-to", "envelope-to",
})
_RESERVED_PREFIXES = ("content-", "resent-")


def check_header_name(name: str) -> str:
    """``name`` if a tenant may set it on an e-mail; ValueError saying why not."""
    if not _FIELD_NAME.fullmatch(name):
        raise ValueError(
            "must be an RFC 5322 field name: printable ASCII without spaces or ':'"
        )
    folded = name.lower()
    if folded in RESERVED_HEADERS or folded.startswith(_RESERVED_PREFIXES):
        raise ValueError(f"{name} is set by Herald or the message's own members")
    return name


class MessageHeader(WireModel):
    name: Str | None = None
    value: Str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_header_name(value)

    @field_validator("value")
    @classmethod
    def _value(cls, value: str | None) -> str | None:
        if value is not None and ("\r" in value or "\n" in value):
            raise ValueError("must not contain a line break")
        return value


class SimpleEmail(WireModel):
    html_part: SimpleEmailPart | None = None
    subject: SimpleEmailPart | None = None
    text_part: SimpleEmailPart | None = None
    headers: list[MessageHeader] | None = None


class RawEmail(WireModel):
    data: Blob | None = None


class EmailMessage(WireModel):
    body: Str | None = None
    feedback_forwarding_address: Str | None = None
    from_address: Str | None = None
    raw_email: RawEmail | None = None
    reply_to_addresses: list[Str] | None = None
    simple_email: SimpleEmail | None = None
    substitutions: Substitutions | None = None


class SMSMessage(WireModel):
    body: Str | None = None
    keyword: Str | None = None
    media_url: Str | None = None
    message_type: MessageType | None = None
    origination_number: Str | None = None
    sender_id: Str | None = None
    substitutions: Substitutions | None = None
    entity_id: Str | None = None
    template_id: Str | None = None


class VoiceMessage(WireModel):
    body: Str | None = None
    language_code: Str | None = None
    origination_number: Str | None = None
    substitutions: Substitutions | None = None
    voice_id: Str | None = None


class DirectMessageConfiguration(WireModel):
    adm_message: ADMMessage | None = None
    apns_message: APNSMessage | None = None
    baidu_message: BaiduMessage | None = None
    default_message: DefaultMessage | None = None
    default_push_notification_message: DefaultPushNotificationMessage | None = None
    email_message: EmailMessage | None = None
    gcm_message: GCMMessage | None = None
    sms_message: SMSMessage | None = None
    voice_message: VoiceMessage | None = None


class Template(WireModel):
    name: Str | None = None
    version: Str | None = None


class TemplateConfiguration(WireModel):
    email_template: Template | None = None
    push_template: Template | None = None
    sms_template: Template | None = None
    voice_template: Template | None = None
    in_app_template: Template | None = None

    def names(self) -> list[str]:
        templates = (
            self.email_template,
            self.push_template,
            self.sms_template,
            self.voice_template,
            self.in_app_template,
        )
        return [t.name for t in templates if t is not None and t.name]


class EndpointSendConfiguration(WireModel):
    body_override: Str | None = None
    context: StrMap | None = None
    raw_content: Str | None = None
    substitutions: Substitutions | None = None
    title_override: Str | None = None


class AddressConfiguration(EndpointSendConfiguration):
    channel_type: ChannelType | None = None


class SendUsersMessageRequest(WireModel):
    context: StrMap | None = None
    message_configuration: DirectMessageConfiguration
    template_configuration: TemplateConfiguration | None = None
    trace_id: Str | None = None
    users: dict[StrictStr, EndpointSendConfiguration]


class MessageRequest(WireModel):
    addresses: dict[StrictStr, AddressConfiguration] | None = None
    context: StrMap | None = None
    endpoints: dict[StrictStr, EndpointSendConfiguration] | None = None
    message_configuration: DirectMessageConfiguration
    template_configuration: TemplateConfiguration | None = None
    trace_id: Str | None = None


# --- applications and endpoints -----------------------------------------------------------


class CreateApplicationRequest(WireModel):
    name: Str = Field(min_length=1, max_length=64)
    tags: StrMap | None = None


# Pinpoint documents no lengths for these members; a device's make or a city name is short,
# and an endpoint document is read on every send, so Herald holds them to its attribute value
# limit (100). EffectiveDate is an ISO 8601 timestamp; RequestId an id.
EndpointText = Annotated[StrictStr, Field(max_length=100)]


class EndpointDemographic(WireModel):
    app_version: EndpointText | None = None
    locale: EndpointText | None = None
    make: EndpointText | None = None
    model: EndpointText | None = None
    model_version: EndpointText | None = None
    platform: EndpointText | None = None
    platform_version: EndpointText | None = None
    timezone: EndpointText | None = None


class EndpointLocation(WireModel):
    city: EndpointText | None = None
    country: EndpointText | None = None
    latitude: StrictFloat | StrictInt | None = None
    longitude: StrictFloat | StrictInt | None = None
    postal_code: EndpointText | None = None
    region: EndpointText | None = None


class EndpointUser(WireModel):
    user_attributes: Substitutions | None = None
    user_id: Str | None = None


class EndpointRequest(WireModel):
    address: Str | None = None
    attributes: Substitutions | None = None
    channel_type: ChannelType | None = None
    demographic: EndpointDemographic | None = None
    effective_date: Annotated[StrictStr, Field(max_length=64)] | None = None
    endpoint_status: Str | None = None
    location: EndpointLocation | None = None
    metrics: dict[StrictStr, StrictFloat | StrictInt] | None = None
    opt_out: Str | None = None
    request_id: Annotated[StrictStr, Field(max_length=128)] | None = None
    user: EndpointUser | None = None


class EndpointBatchItem(EndpointRequest):
    id: Str | None = None


class EndpointBatchRequest(WireModel):
    item: list[EndpointBatchItem]


# --- channels ------------------------------------------------------------------------------


class APNSChannelRequest(WireModel):
    bundle_id: Str | None = None
    certificate: Str | None = None
    default_authentication_method: Str | None = None
    enabled: StrictBool | None = None
    private_key: Str | None = None
    team_id: Str | None = None
    token_key: Str | None = None
    token_key_id: Str | None = None


class GCMChannelRequest(WireModel):
    api_key: Str | None = None
    default_authentication_method: Str | None = None
    enabled: StrictBool | None = None
    service_json: Str | None = None


class ADMChannelRequest(WireModel):
    client_id: Str
    client_secret: Str
    enabled: StrictBool | None = None


class BaiduChannelRequest(WireModel):
    api_key: Str
    enabled: StrictBool | None = None
    secret_key: Str


class EmailChannelRequest(WireModel):
    configuration_set: Str | None = None
    enabled: StrictBool | None = None
    from_address: Str
    identity: Str
    role_arn: Str | None = None
    orchestration_sending_role_arn: Str | None = None


class SMSChannelRequest(WireModel):
    enabled: StrictBool | None = None
    sender_id: Str | None = None
    short_code: Str | None = None


class VoiceChannelRequest(WireModel):
    enabled: StrictBool | None = None


# --- events, phone numbers, one-time passwords ---------------------------------------------


class EventSession(WireModel):
    """An event's ``Session`` (the model's ``Session`` shape)."""

    duration: StrictInt | None = None
    id: Str
    start_timestamp: Str
    stop_timestamp: Str | None = None


class Event(WireModel):
    app_package_name: Str | None = None
    app_title: Str | None = None
    app_version_code: Str | None = None
    attributes: StrMap | None = None
    client_sdk_version: Str | None = None
    event_type: Str
    metrics: dict[StrictStr, StrictFloat | StrictInt] | None = None
    sdk_name: Str | None = None
    session: EventSession | None = None
    timestamp: Str


class EventsRequest(WireModel):
    # Items stay raw here: each is validated on its own, so one bad item gets its own 400
    # entry while the others are accepted (worker.intake.events).
    batch_item: dict[StrictStr, dict[str, Any]]


class NumberValidateRequest(WireModel):
    iso_country_code: Str | None = None
    phone_number: Str | None = None


class SendOTPMessageRequestParameters(WireModel):
    allowed_attempts: StrictInt | None = None
    brand_name: Str
    channel: Str
    code_length: StrictInt | None = None
    destination_identity: Str
    entity_id: Str | None = None
    language: Str | None = None
    origination_identity: Str
    reference_id: Str
    template_id: Str | None = None
    validity_period: StrictInt | None = None


class VerifyOTPMessageRequestParameters(WireModel):
    destination_identity: Str
    otp: Str
    reference_id: Str


# --- application settings and tags -------------------------------------------------------

# Terraform's aws_pinpoint_app writes every member of a block it has, "" for the ones the user
# left out (WebUrl "", Mode ""), so "" is accepted wherever a string is.
_CLOCK = r"^(|([01][0-9]|2[0-3]):[0-5][0-9])$"
Count = Annotated[StrictInt, Field(ge=0)]


class CampaignHook(WireModel):
    lambda_function_name: Str | None = None
    mode: Annotated[Str, Field(pattern=r"^(|FILTER|DELIVERY)$")] | None = None
    web_url: Str | None = None


class CampaignLimits(WireModel):
    daily: Count | None = None
    maximum_duration: Count | None = None
    messages_per_second: Count | None = None
    session: Count | None = None
    total: Count | None = None


class QuietTime(WireModel):
    end: Annotated[Str, Field(pattern=_CLOCK)] | None = None
    start: Annotated[Str, Field(pattern=_CLOCK)] | None = None


class JourneyTimeframeCap(WireModel):
    cap: Count | None = None
    days: Count | None = None


class ApplicationSettingsJourneyLimits(WireModel):
    daily_cap: Count | None = None
    timeframe_cap: JourneyTimeframeCap | None = None
    total_cap: Count | None = None


class WriteApplicationSettingsRequest(WireModel):
    campaign_hook: CampaignHook | None = None
    cloud_watch_metrics_enabled: StrictBool | None = None
    event_tagging_enabled: StrictBool | None = None
    journey_limits: ApplicationSettingsJourneyLimits | None = None
    limits: CampaignLimits | None = None
    quiet_time: QuietTime | None = None


class TagsModel(WireModel):
    """TagResource's body and ListTagsForResource's answer; ``tags`` is lower case on the
    wire, as the model spells it."""

    tags: StrMap
