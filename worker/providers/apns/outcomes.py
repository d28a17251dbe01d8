"""The one table from Apple's answers (status, reason) to a delivery outcome."""

from __future__ import annotations

from worker.core.vocabulary import DeliveryStatus, Outcome
from worker.providers.apns.connection import ApnsResponse
from worker.providers.apns.payload import ApnsRequest
from worker.providers.base import OutcomeRule, push_failure
from worker.providers.http import (
    excerpt,
    json_or_none,
    parse_retry_after,
)

# --- outcome table -------------------------------------------------------------------------


_OK = DeliveryStatus.SUCCESSFUL
_PERMANENT = DeliveryStatus.PERMANENT_FAILURE
_TEMPORARY = DeliveryStatus.TEMPORARY_FAILURE
_THROTTLED = DeliveryStatus.THROTTLED

# Apple's answers, (HTTP status, reason) → outcome, as documented in APPLE_RESPONSES_DOC.
# A (status, None) row answers for reasons Apple adds later. Only 429 and 5xx are worth
# sending again; Apple: "retry ... 500 and 503 ... with exponential backoff".
APNS_OUTCOMES: dict[tuple[int, str | None], OutcomeRule] = {
    (200, None): OutcomeRule(_OK, "Success"),
    (400, "BadCollapseId"): OutcomeRule(
        _PERMANENT, "The collapse identifier exceeds the maximum allowed size"
    ),
    (400, "BadDeviceToken"): OutcomeRule(
        _PERMANENT,
        "The specified device token is invalid (or for the other environment)",
        deactivate=True,
    ),
    (400, "BadExpirationDate"): OutcomeRule(_PERMANENT, "The apns-expiration value is invalid"),
    (400, "BadMessageId"): OutcomeRule(_PERMANENT, "The apns-id value is invalid"),
    (400, "BadPriority"): OutcomeRule(_PERMANENT, "The apns-priority value is invalid"),
    (400, "BadTopic"): OutcomeRule(_PERMANENT, "The apns-topic value is invalid"),
    (400, "DeviceTokenNotForTopic"): OutcomeRule(
        _PERMANENT, "The device token doesn't match the specified topic", deactivate=True
    ),
    (400, "DuplicateHeaders"): OutcomeRule(_PERMANENT, "One or more headers are repeated"),
    # The connection sat idle too long; the request itself was fine.
    (400, "IdleTimeout"): OutcomeRule(_TEMPORARY, "Idle timeout"),
    (400, "InvalidPushType"): OutcomeRule(_PERMANENT, "The apns-push-type value is invalid"),
    (400, "MissingDeviceToken"): OutcomeRule(
        _PERMANENT, "The device token isn't in the request :path"
    ),
    (400, "MissingTopic"): OutcomeRule(_PERMANENT, "The apns-topic header is missing and required"),
    (400, "PayloadEmpty"): OutcomeRule(_PERMANENT, "The message payload is empty"),
    (400, "TopicDisallowed"): OutcomeRule(_PERMANENT, "Pushing to this topic is not allowed"),
    (400, None): OutcomeRule(_PERMANENT, "Bad request"),
    (403, "BadCertificate"): OutcomeRule(_PERMANENT, "The certificate is invalid", credential=True),
    (403, "BadCertificateEnvironment"): OutcomeRule(
        _PERMANENT, "The client certificate is for the wrong environment", credential=True
    ),
    (403, "ExpiredProviderToken"): OutcomeRule(
        _PERMANENT,
        "The provider token is stale and a new token should be generated",
        credential=True,
    ),
    (403, "Forbidden"): OutcomeRule(
        _PERMANENT, "The specified action is not allowed", credential=True
    ),
    (403, "InvalidProviderToken"): OutcomeRule(
        _PERMANENT,
        "The provider token is not valid, or the token signature can't be verified",
        credential=True,
    ),
    (403, "MissingProviderToken"): OutcomeRule(
        _PERMANENT, "No provider certificate or authorization header was sent", credential=True
    ),
    (403, "UnrelatedKeyIdInToken"): OutcomeRule(
        _PERMANENT,
        "The key id in the provider token isn't related to the key id of the token",
        credential=True,
    ),
    (403, "BadEnvironmentKeyInToken"): OutcomeRule(
        _PERMANENT, "The provider token's key is for the wrong environment", credential=True
    ),
    (403, None): OutcomeRule(
        _PERMANENT, "An error with the certificate or the provider token", credential=True
    ),
    (404, "BadPath"): OutcomeRule(_PERMANENT, "The request contained an invalid :path value"),
    (404, None): OutcomeRule(_PERMANENT, "The request contained an invalid :path value"),
    (405, "MethodNotAllowed"): OutcomeRule(_PERMANENT, "The specified :method value isn't POST"),
    (405, None): OutcomeRule(_PERMANENT, "The specified :method value isn't POST"),
    (410, "ExpiredToken"): OutcomeRule(_PERMANENT, "The device token has expired", deactivate=True),
    (410, "Unregistered"): OutcomeRule(
        _PERMANENT, "The device token is inactive for the specified topic", deactivate=True
    ),
    (410, None): OutcomeRule(
        _PERMANENT, "The device token is no longer active for the topic", deactivate=True
    ),
    (413, "PayloadTooLarge"): OutcomeRule(_PERMANENT, "The message payload is too large"),
    (413, None): OutcomeRule(_PERMANENT, "The message payload is too large"),
    (429, "TooManyProviderTokenUpdates"): OutcomeRule(
        _THROTTLED, "The provider's authentication token is being updated too often"
    ),
    (429, "TooManyRequests"): OutcomeRule(
        _THROTTLED, "Too many requests were made consecutively to the same device token"
    ),
    (429, None): OutcomeRule(_THROTTLED, "Too many requests"),
    (500, "InternalServerError"): OutcomeRule(_TEMPORARY, "An internal server error occurred"),
    (500, None): OutcomeRule(_TEMPORARY, "Internal server error"),
    (503, "ServiceUnavailable"): OutcomeRule(_TEMPORARY, "The service is unavailable"),
    (503, "Shutdown"): OutcomeRule(_TEMPORARY, "The APNs server is shutting down"),
    (503, None): OutcomeRule(_TEMPORARY, "The server is shutting down and unavailable"),
}


def classify(status: int, reason: str | None) -> OutcomeRule:
    row = APNS_OUTCOMES.get((status, reason)) or APNS_OUTCOMES.get((status, None))
    if row is not None:
        return row
    if status >= 500:
        return OutcomeRule(_TEMPORARY, "Server error")
    return OutcomeRule(DeliveryStatus.UNKNOWN_FAILURE, "Unexpected answer from APNs")


def outcome_for(
    response: ApnsResponse, request: ApnsRequest, channel_type: str, credential_name: str
) -> Outcome:
    """The :class:`Outcome` for what APNs answered. ``credential_name`` is what a 403 blames
    ("token key" or "certificate")."""
    text = response.body.decode("utf-8", "replace")
    reason: str | None = None
    document = json_or_none(text)
    if isinstance(document, dict) and isinstance(document.get("reason"), str):
        reason = document["reason"]
    row = classify(response.status, reason)
    if row.status is _OK:
        request_id = dict(request.headers).get("apns-id")
        return Outcome(
            status=_OK,
            status_code=response.status,
            status_message="Delivered to APNs",
            message_id=response.headers.get("apns-id") or request_id,
        )
    if row.credential:
        message = (
            f"APNs rejected the {channel_type} channel's {credential_name}: "
            f"{reason or response.status} ({row.reason})"
        )
    else:
        message = f"{row.reason}" + (f" ({reason})" if reason else "")
    return push_failure(
        channel_type=channel_type,
        status=row.status,
        status_code=response.status,
        error_message=message,
        provider_error=reason or "",
        provider_response=excerpt(text),
        retry_after=parse_retry_after(response.headers.get("retry-after"))
        if row.status is _THROTTLED
        else None,
        deactivate_endpoint=row.deactivate,
    )
