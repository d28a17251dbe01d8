"""Message choice and rendering (DESIGN.md §4), pure functions.

For each endpoint: pick the message for its channel (channel message over the default),
apply the user's overrides, substitute ``{{Variables}}`` from Substitutions and the endpoint
record, and produce the rendered content a provider adapter sends.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker import wire
from worker.core.addresses import normalize_phone
from worker.core.vocabulary import (
    CHANNELS,
    PUSH_TYPES,
    SENDABLE_TYPES,
    ChannelConfig,
    ChannelType,
    Content,
    EmailContent,
    Family,
    PushNotification,
    SmsContent,
    VoiceContent,
)
from worker.delivery.render_limits import RenderBudget

_COMMON_PUSH_MEMBERS = {
    "action",
    "body",
    "data",
    "raw_content",
    "silent_push",
    "sound",
    "substitutions",
    "title",
    "url",
}
# ``{{ Name }}``: the name is what lies between the braces, stripped. One greedy class and no
# other quantifier, so a failed match backtracks once over its span and the scan is linear:
# the former ``\{\{\s*([^{}]+?)\s*\}\}`` took cubic time on ``{{`` and spaces (issue 14).
_VARIABLE = re.compile(r"\{\{([^{}]+)\}\}")


class RenderError(ValueError):
    """The message cannot be rendered for this endpoint (a permanent failure)."""


# --- addresses ---------------------------------------------------------------------------


def dedup_key(channel_type: str, address: str) -> tuple[str, str]:
    """Two endpoints with equal keys in one request get one delivery (§4)."""
    if channel_type == ChannelType.EMAIL:
        return channel_type, address.strip().lower()
    if channel_type in (ChannelType.SMS, ChannelType.VOICE):
        return channel_type, normalize_phone(address)
    return channel_type, address


# --- variables ---------------------------------------------------------------------------


def _flatten(prefix: str, values: Mapping[str, Any] | None, into: dict[str, str]) -> None:
    for key, value in (values or {}).items():
        if isinstance(value, list):
            into[f"{prefix}{key}"] = str(value[0]) if value else ""
        elif isinstance(value, float) and value.is_integer():
            into[f"{prefix}{key}"] = str(int(value))
        elif value is not None:
            into[f"{prefix}{key}"] = str(value)


def endpoint_variables(
    endpoint_id: str | None,
    channel_type: str | None,
    address: str | None,
    user_id: str | None,
    document: Mapping[str, Any] | None,
) -> dict[str, str]:
    """``{{User.UserId}}``, ``{{Attributes.X}}``, … from an endpoint record."""
    document = document or {}
    variables: dict[str, str] = {}
    if endpoint_id is not None:
        variables["Id"] = endpoint_id
    if channel_type is not None:
        variables["ChannelType"] = channel_type
    if address is not None:
        variables["Address"] = address
    if user_id is not None:
        variables["User.UserId"] = user_id
    _flatten("User.UserAttributes.", document.get("User", {}).get("UserAttributes"), variables)
    for member in ("Attributes", "Metrics", "Demographic", "Location"):
        _flatten(f"{member}.", document.get(member), variables)
    return variables


def merge_substitutions(*layers: Mapping[str, list[str]] | None) -> dict[str, str]:
    """Later layers win; each name takes the first value of its list."""
    merged: dict[str, str] = {}
    for layer in layers:
        for key, values in (layer or {}).items():
            merged[key] = values[0] if values else ""
    return merged


def substitute(
    text: str | None,
    variables: Mapping[str, str],
    *,
    html_part: bool = False,
    budget: RenderBudget | None = None,
) -> str | None:
    """Replace ``{{Name}}`` with its value; missing names render empty. Values inserted into
    an HTML part are escaped so a substitution cannot add markup.

    The output's size is charged to ``budget`` piece by piece before it is joined, so a text
    that would render too large raises RenderLimitExceeded without being built."""
    if text is None:
        return None
    budget = budget if budget is not None else RenderBudget()
    if "{{" not in text:
        budget.charge_chars(len(text))
        return text
    pieces: list[str] = []
    escaped: dict[str, str] = {}
    start = 0
    for match in _VARIABLE.finditer(text):
        name = match.group(1).strip()
        value = variables.get(name, "")
        if html_part and value:
            if name not in escaped:
                escaped[name] = html.escape(value, quote=True)
            value = escaped[name]
        budget.charge_reference()
        budget.charge_chars(match.start() - start + len(value))
        pieces.append(text[start : match.start()])
        pieces.append(value)
        start = match.end()
    budget.charge_chars(len(text) - start)
    pieces.append(text[start:])
    return "".join(pieces)


# --- message choice ----------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """Who one rendered message is for."""

    channel_type: str
    address: str
    endpoint_id: str | None = None
    user_id: str | None = None
    document: Mapping[str, Any] | None = None


def has_message(
    config: wire.DirectMessageConfiguration,
    channel_type: str,
    overrides: wire.EndpointSendConfiguration | None = None,
) -> bool:
    """Whether the request carries a message this channel can send."""
    if overrides is not None and (overrides.raw_content or overrides.body_override):
        return channel_type in SENDABLE_TYPES
    spec = CHANNELS.get(ChannelType(channel_type)) if channel_type in SENDABLE_TYPES else None
    if spec is None:
        return False
    default = (
        config.default_push_notification_message if spec.family is Family.PUSH
        else config.default_message
    )
    return getattr(config, spec.message_member) is not None or default is not None


def render(
    config: wire.DirectMessageConfiguration,
    recipient: Recipient,
    channel: ChannelConfig,
    *,
    overrides: wire.EndpointSendConfiguration | None = None,
    context: Mapping[str, str] | None = None,
    default_origination_number: str | None = None,
    budget: RenderBudget | None = None,
) -> Content:
    """The content for one recipient. Raises RenderError for a permanent problem, and
    RenderLimitExceeded when the message would take more than its budget."""
    overrides = overrides or wire.EndpointSendConfiguration()
    budget = budget if budget is not None else RenderBudget()
    record = endpoint_variables(
        recipient.endpoint_id,
        recipient.channel_type,
        recipient.address,
        recipient.user_id,
        recipient.document,
    )
    merged_context = {**(context or {}), **(overrides.context or {})}
    default_subs = config.default_message.substitutions if config.default_message else None
    if recipient.channel_type in PUSH_TYPES:
        return _render_push(
            config, recipient.channel_type, record, overrides, merged_context, budget
        )
    if recipient.channel_type == ChannelType.EMAIL:
        message = config.email_message or wire.EmailMessage()
        variables = {**record, **merge_substitutions(
            default_subs, message.substitutions, overrides.substitutions
        )}
        return _render_email(config, message, channel, variables, overrides, budget)
    if recipient.channel_type == ChannelType.SMS:
        sms = config.sms_message or wire.SMSMessage()
        variables = {**record, **merge_substitutions(
            default_subs, sms.substitutions, overrides.substitutions
        )}
        body = overrides.body_override or sms.body or _default_body(config)
        origination = (
            sms.origination_number
            or sms.sender_id
            or channel.settings.get("ShortCode")
            or channel.settings.get("SenderId")
            or default_origination_number
        )
        return SmsContent(
            body=substitute(body, variables, budget=budget) or "",
            origination_number=origination,
            sender_id=sms.sender_id or channel.settings.get("SenderId"),
            message_type=(sms.message_type or wire.MessageType.TRANSACTIONAL).value,
            keyword=sms.keyword,
            media_url=sms.media_url,
            entity_id=sms.entity_id,
            template_id=sms.template_id,
        )
    if recipient.channel_type == ChannelType.VOICE:
        voice = config.voice_message or wire.VoiceMessage()
        variables = {**record, **merge_substitutions(
            default_subs, voice.substitutions, overrides.substitutions
        )}
        body = overrides.body_override or voice.body or _default_body(config)
        return VoiceContent(
            body=substitute(body, variables, budget=budget) or "",
            language_code=voice.language_code,
            voice_id=voice.voice_id,
            origination_number=voice.origination_number or default_origination_number,
        )
    raise RenderError(f"Channel type {recipient.channel_type} is not supported by Herald")


def _default_body(config: wire.DirectMessageConfiguration) -> str | None:
    return config.default_message.body if config.default_message else None


def _render_push(
    config: wire.DirectMessageConfiguration,
    channel_type: str,
    record: Mapping[str, str],
    overrides: wire.EndpointSendConfiguration,
    context: dict[str, str],
    budget: RenderBudget,
) -> PushNotification:
    specific = getattr(config, CHANNELS[ChannelType(channel_type)].message_member)
    default = config.default_push_notification_message

    def pick(member: str) -> Any:
        value = getattr(specific, member, None) if specific is not None else None
        if value is None and default is not None:
            value = getattr(default, member, None)
        return value

    variables = {**record, **merge_substitutions(
        default.substitutions if default else None,
        specific.substitutions if specific else None,
        overrides.substitutions,
    )}
    options = {}
    if specific is not None:
        options = {
            wire.wire_name(name): value
            for name, value in specific
            if name not in _COMMON_PUSH_MEMBERS and value is not None
        }
    action = pick("action")
    return PushNotification(
        title=substitute(overrides.title_override or pick("title"), variables, budget=budget),
        body=substitute(overrides.body_override or pick("body"), variables, budget=budget),
        action=action.value if action is not None else None,
        url=substitute(pick("url"), variables, budget=budget),
        data=dict(pick("data") or {}),
        silent_push=bool(pick("silent_push")),
        sound=pick("sound"),
        raw_content=overrides.raw_content or pick("raw_content"),
        context=context,
        options=options,
    )


def _header_safe(name: str, value: str | None) -> str | None:
    if value is not None and ("\r" in value or "\n" in value):
        raise RenderError(f"{name} must not contain line breaks")
    return value


def _render_email(
    config: wire.DirectMessageConfiguration,
    message: wire.EmailMessage,
    channel: ChannelConfig,
    variables: Mapping[str, str],
    overrides: wire.EndpointSendConfiguration,
    budget: RenderBudget,
) -> EmailContent:
    from_address = message.from_address or channel.settings.get("FromAddress")
    if not from_address:
        raise RenderError("No FromAddress in the message or the app's email channel")
    _header_safe("FromAddress", from_address)
    reply_to = tuple(
        _header_safe("ReplyToAddresses", a) or "" for a in (message.reply_to_addresses or [])
    )
    feedback = _header_safe("FeedbackForwardingAddress", message.feedback_forwarding_address)
    common: dict[str, Any] = {
        "from_address": from_address,
        "reply_to": reply_to,
        "feedback_forwarding_address": feedback,
    }
    simple = message.simple_email
    subject_template = overrides.title_override or (
        simple.subject.data if simple and simple.subject else None
    )
    # A substituted subject travels in a header: a line break there would start a new header.
    subject = _header_safe("Subject", substitute(subject_template, variables, budget=budget))
    if overrides.body_override:
        return EmailContent(
            subject=subject, text=substitute(overrides.body_override, variables, budget=budget),
            **common,
        )
    if message.raw_email is not None and message.raw_email.data:
        return EmailContent(raw=message.raw_email.data, **common)
    if simple is not None and (simple.text_part or simple.html_part):
        headers = tuple(
            (_header_safe("Headers.Name", h.name) or "", _header_safe("Headers.Value", h.value)
             or "")
            for h in (simple.headers or [])
            if h.name
        )
        return EmailContent(
            subject=subject,
            text=(
                substitute(simple.text_part.data, variables, budget=budget)
                if simple.text_part
                else None
            ),
            html=(
                substitute(simple.html_part.data, variables, html_part=True, budget=budget)
                if simple.html_part
                else None
            ),
            text_charset=(simple.text_part.charset if simple.text_part else None) or "utf-8",
            html_charset=(simple.html_part.charset if simple.html_part else None) or "utf-8",
            headers=headers,
            **common,
        )
    body = message.body or _default_body(config)
    if body is None:
        raise RenderError("No e-mail body: set EmailMessage or DefaultMessage")
    return EmailContent(subject=subject, text=substitute(body, variables, budget=budget),
                        **common)
