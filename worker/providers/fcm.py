"""Firebase Cloud Messaging (HTTP v1) adapter for the GCM channel.

The message is a *data* message in the shape Pinpoint sent, so Android apps built on the
Pinpoint / Amplify SDKs keep working: a flat string map with ``pinpoint.notification.title``,
``pinpoint.notification.body``, ``pinpoint.openApp``, ``pinpoint.url``, ``pinpoint.jsonBody``,
``pinpoint.notification.silentPush`` … (:func:`worker.providers.android.pinpoint_data`, the
map ADM and Baidu carry too), which the app's SDK turns into the notification.

Authentication is the service account's OAuth 2.0 JWT-bearer grant
(https://developers.google.com/identity/protocols/oauth2/service-account#httprest): an RS256
assertion signed with ``private_key`` is exchanged at ``HERALD_FCM_TOKEN_URL`` for an access
token, which is cached per service account until shortly before it expires. The JSON's own
``token_uri`` is ignored: the ServiceJson is a tenant's input, and a tenant must not choose
where a worker connects (and reads the answer back through ``StatusMessage``). The legacy
server-key ("KEY") method was shut down by Google in 2024 and is answered with a permanent
failure.

Why pyfcm is not a dependency: ``pyfcm.FCMNotification`` (2.x) is synchronous
(``requests``), sleeps inside ``send_request`` for as long as a 429/503 ``Retry-After`` says and
then recurses without bound, retries 502/503 again through urllib3, and refreshes its token with
google-auth's blocking transport. Running it in a thread would still block that thread for the
whole ``Retry-After`` and take the retry decision away from Herald's retry policy (DESIGN §7).
Its payload builder needs a credentialed instance and emits ``validate_only``. So the HTTP is
done here with ``httpx.AsyncClient`` (HTTP/2, pooled, no retries of its own) and the JWT is
signed with ``cryptography`` directly — a dozen lines, typed, no blocking refresh.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from worker.core.config import Settings
from worker.core.vocabulary import (
    ChannelConfig,
    DeliveryStatus,
    Outcome,
    PushNotification,
)
from worker.providers.android import PayloadError, pinpoint_data, raw_json_object, ttl_seconds
from worker.providers.base import InvalidCredentials, OutcomeRule
from worker.providers.http import (
    OAuthPushProvider,
    excerpt,
    json_or_none,
    rule_outcome,
    token_answer,
)

CHANNEL_TYPE = "GCM"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# "4096 bytes for most messages … This includes both the keys and the values."
# https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode (INVALID_ARGUMENT)
FCM_PAYLOAD_LIMIT = 4096
# FCM keeps a message at most 28 days; a longer ttl is an INVALID_ARGUMENT.
FCM_MAX_TTL_S = 2_419_200


# --- the service account --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """The fields of a Google service-account JSON that FCM needs, key already parsed."""

    project_id: str
    client_email: str
    private_key_id: str | None
    private_key: rsa.RSAPrivateKey
    cache_key: str

    @classmethod
    def from_json(cls, text: str) -> ServiceAccount:
        try:
            info = json.loads(text)
        except ValueError:
            raise ValueError("is not valid JSON") from None
        if not isinstance(info, dict):
            raise ValueError("is not a JSON object")
        missing = [
            name
            for name in ("project_id", "private_key", "client_email")
            if not isinstance(info.get(name), str) or not info[name]
        ]
        if missing:
            raise ValueError("lacks " + ", ".join(missing))
        try:
            key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        except (ValueError, TypeError):
            raise ValueError("has a private_key that is not a PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("has a private_key that is not an RSA key")
        key_id = info.get("private_key_id")
        fingerprint = hashlib.sha256(
            "\0".join(
                (info["client_email"], str(key_id), info["private_key"])
            ).encode()
        ).hexdigest()
        return cls(
            project_id=info["project_id"],
            client_email=info["client_email"],
            private_key_id=key_id if isinstance(key_id, str) else None,
            private_key=key,
            cache_key=fingerprint,
        )


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def service_account_assertion(account: ServiceAccount, now: int, token_url: str) -> str:
    """The RS256-signed JWT a service account exchanges for an access token at
    ``token_url``."""
    header: dict[str, str] = {"alg": "RS256", "typ": "JWT"}
    if account.private_key_id:
        header["kid"] = account.private_key_id
    claims = {
        "iss": account.client_email,
        "scope": FCM_SCOPE,
        "aud": token_url,
        "iat": now,
        "exp": now + 3600,
    }
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = account.private_key.sign(
        signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    return signing_input + "." + _b64url(signature)


# --- the payload ---------------------------------------------------------------------------


def _fcm_priority(value: Any) -> str | None:
    if value is None or value == "":
        return None
    text = str(value).strip().lower()
    if text in ("high", "10"):
        return "high"
    if text in ("normal", "5"):
        return "normal"
    raise PayloadError(f"Priority {value!r} is not one of high, normal, 10, 5")


def build_fcm_message(notification: PushNotification, token: str) -> dict[str, Any]:
    """The FCM v1 ``messages:send`` body for one registration token (pure).

    Without ``RawContent`` this is a data message carrying :func:`pinpoint_data`, with
    ``android.priority`` (``Priority``: high/normal/10/5), ``android.ttl`` (``TimeToLive``,
    capped at FCM's 28 days), ``collapse_key`` and ``restricted_package_name`` when given.

    ``RawContent`` is the message itself and is sent as it is, addressed to ``token``:
    ``{"message": {...}}`` is used verbatim; an object without ``"message"`` is taken as the
    message body and wrapped. A legacy-API body (top-level ``priority``, ``time_to_live``,
    ``collapse_key``, ``restricted_package_name``; Pinpoint accepted those) is moved into
    ``android`` the way Pinpoint translated it, addressing keys (``to``, ``registration_ids``)
    are dropped, and non-string ``data`` values are JSON-encoded, as v1 requires strings.
    """
    if notification.raw_content is not None:
        return _raw_fcm_message(raw_json_object(notification.raw_content), token)
    options = notification.options
    android: dict[str, Any] = {}
    priority = _fcm_priority(options.get("Priority"))
    if priority is not None:
        android["priority"] = priority
    ttl = ttl_seconds(options.get("TimeToLive"), "TimeToLive")
    if ttl is not None:
        android["ttl"] = f"{min(ttl, FCM_MAX_TTL_S)}s"
    if options.get("CollapseKey"):
        android["collapse_key"] = str(options["CollapseKey"])
    if options.get("RestrictedPackageName"):
        android["restricted_package_name"] = str(options["RestrictedPackageName"])
    message: dict[str, Any] = {"token": token, "data": pinpoint_data(notification)}
    if android:
        message["android"] = android
    return {"message": message}


_LEGACY_ANDROID_KEYS = {
    "priority": "priority",
    "collapse_key": "collapse_key",
    "restricted_package_name": "restricted_package_name",
}
_LEGACY_DROPPED = ("to", "registration_ids", "condition", "content_available", "dry_run")


def _raw_fcm_message(raw: dict[str, Any], token: str) -> dict[str, Any]:
    if "message" in raw:
        if not isinstance(raw["message"], dict):
            raise PayloadError('RawContent "message" must be a JSON object')
        body = dict(raw)
        body["message"] = {**raw["message"], "token": token}
        return body
    message = {k: v for k, v in raw.items() if k not in _LEGACY_DROPPED}
    android = dict(message.get("android") or {})
    for legacy, v1 in _LEGACY_ANDROID_KEYS.items():
        if legacy in message:
            value = message.pop(legacy)
            android.setdefault(v1, _fcm_priority(value) if legacy == "priority" else value)
    if "time_to_live" in message:
        ttl = ttl_seconds(message.pop("time_to_live"), "time_to_live")
        if ttl is not None:
            android.setdefault("ttl", f"{min(ttl, FCM_MAX_TTL_S)}s")
    if android:
        message["android"] = android
    if isinstance(message.get("data"), dict):
        message["data"] = {
            str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
            for k, v in message["data"].items()
        }
    message["token"] = token
    return {"message": message}


def fcm_payload_size(message: Mapping[str, Any]) -> int:
    """Bytes FCM counts against its limit: keys and values of ``data`` and ``notification``."""
    inner = message.get("message", message)
    size = 0
    for part in ("data", "notification"):
        section = inner.get(part) if isinstance(inner, Mapping) else None
        if isinstance(section, Mapping):
            for key, value in section.items():
                size += len(str(key).encode()) + len(
                    (value if isinstance(value, str) else json.dumps(value)).encode()
                )
    return size


# --- the answer ----------------------------------------------------------------------------


P = DeliveryStatus.PERMANENT_FAILURE
T = DeliveryStatus.TEMPORARY_FAILURE
Q = DeliveryStatus.THROTTLED

# FCM v1 error codes → outcome. Source: https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode
# (each reason paraphrases Google's "description and resolution steps").
FCM_ERRORS: dict[str, OutcomeRule] = {
    "UNREGISTERED": OutcomeRule(
        P,
        "404: the app instance was unregistered from FCM; the token is no longer valid",
        deactivate=True,
    ),
    "INVALID_ARGUMENT": OutcomeRule(
        P,
        "400: request parameters were invalid (token, package name, size, data key, TTL); "
        "the endpoint is deactivated only when the registration token is what was invalid",
    ),
    "SENDER_ID_MISMATCH": OutcomeRule(
        P,
        "403: the authenticated sender ID differs from the one the token is registered to",
        deactivate=True,
    ),
    "QUOTA_EXCEEDED": OutcomeRule(
        Q,
        "429: sending limit exceeded (message, device or topic rate); retry after Retry-After",
    ),
    "UNAVAILABLE": OutcomeRule(
        T,
        "503: the server is overloaded; retry honouring Retry-After, with backoff",
    ),
    "INTERNAL": OutcomeRule(T, "500: an unknown internal error; retry with backoff"),
    "THIRD_PARTY_AUTH_ERROR": OutcomeRule(
        P,
        "401: the APNs certificate or web push auth key set in Firebase is invalid or missing",
    ),
}


def _fcm_error(body: Any) -> tuple[str, str, bool]:
    """(FCM error code or Google status, message, whether the token is the invalid field)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", "", False
    message = str(error.get("message") or "")
    code = str(error.get("status") or "")
    about_token = "registration token" in message.lower()
    for detail in error.get("details") or ():
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type") or "")
        if kind.endswith("google.firebase.fcm.v1.FcmError") and detail.get("errorCode"):
            code = str(detail["errorCode"])
        for violation in detail.get("fieldViolations") or ():
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                about_token = True
    return code, message, about_token


def classify_fcm_response(status_code: int, text: str, headers: Mapping[str, str]) -> Outcome:
    """Turn an FCM v1 answer into an outcome (pure)."""
    body = json_or_none(text)
    if status_code == 200:
        name = body.get("name") if isinstance(body, dict) else None
        return Outcome(
            status=DeliveryStatus.SUCCESSFUL,
            status_code=200,
            status_message=excerpt(text),
            message_id=str(name) if name else None,
        )
    code, message, about_token = _fcm_error(body)
    rule = FCM_ERRORS.get(code)
    if rule is not None:
        # Google's message is the errorMessage; the table's reason stands in when it gives none.
        return rule_outcome(
            replace(rule, reason=message or rule.reason),
            CHANNEL_TYPE,
            status_code,
            text,
            headers,
            provider_error=code,
            deactivate=code == "INVALID_ARGUMENT" and about_token,
        )
    # No FCM error code: Google's own statuses, or something in between.
    if status_code == 401:
        rule = OutcomeRule(
            P,
            "FCM did not accept the access token obtained with the GCM channel's ServiceJson",
        )
    elif status_code == 403:
        rule = OutcomeRule(
            P,
            "the GCM channel's ServiceJson service account may not send with this project "
            "(missing cloudmessaging permission or FCM API disabled)",
        )
    elif status_code == 429:
        rule = OutcomeRule(Q, "FCM throttled the request")
    elif status_code >= 500:
        rule = OutcomeRule(T, "FCM server error")
    else:
        rule = OutcomeRule(P, f"FCM refused the message (HTTP {status_code})")
    return rule_outcome(
        rule,
        CHANNEL_TYPE, status_code, text, headers, provider_error=code, detail=message
    )


# --- channel credentials -------------------------------------------------------------------


def check_channel_credentials(values: Mapping[str, Any]) -> None:
    """Check a channel update's credentials (settings and secrets, wire names) before they
    are stored; raises InvalidCredentials saying what is wrong."""
    service_json = values.get("ServiceJson")
    if not service_json and not values.get("ApiKey"):
        raise InvalidCredentials("ServiceJson (or the legacy ApiKey) is required")
    if service_json:
        try:
            account = json.loads(service_json)
        except ValueError:
            raise InvalidCredentials("ServiceJson is not valid JSON") from None
        # token_uri is not needed: tokens come from HERALD_FCM_TOKEN_URL, never the tenant's.
        members = ("project_id", "private_key", "client_email")
        if not isinstance(account, dict) or not all(
            isinstance(account.get(k), str) and account[k] for k in members
        ):
            raise InvalidCredentials(
                "ServiceJson must have project_id, private_key and client_email"
            )
        try:
            load_pem_private_key(account["private_key"].encode(), password=None)
        except (ValueError, TypeError):
            raise InvalidCredentials("ServiceJson's private_key is not a PEM private key") from None


# --- the provider ---------------------------------------------------------------------------


class FcmProvider(OAuthPushProvider[ServiceAccount]):
    """Sends GCM-channel pushes through FCM HTTP v1."""

    name = "fcm"
    channel_type = CHANNEL_TYPE
    service = "FCM"
    http2 = True
    payload_limit = FCM_PAYLOAD_LIMIT

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._accounts: dict[str, ServiceAccount | str] = {}

    def _build(self, notification: PushNotification, address: str) -> dict[str, Any]:
        return build_fcm_message(notification, address)

    def _payload_size(self, message: Mapping[str, Any]) -> int:
        return fcm_payload_size(message)

    def _too_large(self, size: int) -> Outcome:
        return self._refused(
            400, f"message too big: {size} bytes of data, FCM allows {FCM_PAYLOAD_LIMIT}"
        )

    def _url(self, credential: ServiceAccount, address: str) -> str:
        return (
            f"{self._settings.fcm_url}/v1/projects/"
            f"{quote(credential.project_id, safe='')}/messages:send"
        )

    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json; charset=UTF-8"}

    def _token_key(self, credential: ServiceAccount) -> str:
        return credential.cache_key

    def _token_rejected(self, response: httpx.Response) -> bool:
        # A 401 with an FCM error code is about the message (THIRD_PARTY_AUTH_ERROR), not
        # our access token.
        code, _, _ = _fcm_error(json_or_none(response.text))
        return code not in FCM_ERRORS

    def _classify(self, response: httpx.Response, address: str) -> Outcome:
        return classify_fcm_response(response.status_code, response.text, response.headers)

    async def _fetch_token(self, credential: ServiceAccount) -> tuple[str, float] | Outcome:
        token_url = self._settings.fcm_token_url
        assertion = service_account_assertion(credential, int(time.time()), token_url)
        response = await self._http.get().post(
            token_url, data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion}
        )
        return token_answer(
            response,
            channel_type=CHANNEL_TYPE,
            refused=(
                f"Google's OAuth token endpoint refused the GCM channel's ServiceJson "
                f"({credential.client_email})"
            ),
        )

    def _credential(self, channel: ChannelConfig) -> ServiceAccount | Outcome:
        service_json = channel.credentials.get("ServiceJson")
        if not service_json:
            if channel.credentials.get("ApiKey"):
                return self._refused(
                    400,
                    "the GCM channel only has an ApiKey: FCM's legacy server-key API "
                    "(DefaultAuthenticationMethod KEY) was shut down by Google in 2024; set "
                    "ServiceJson with DefaultAuthenticationMethod TOKEN",
                )
            return self._refused(400, "the GCM channel has no ServiceJson credentials")
        digest = hashlib.sha256(service_json.encode()).hexdigest()
        account = self._accounts.get(digest)
        if account is None:
            try:
                account = ServiceAccount.from_json(service_json)
            except ValueError as exc:
                account = f"the GCM channel's ServiceJson {exc}"
            if len(self._accounts) >= 1024:
                self._accounts.clear()
            self._accounts[digest] = account
        if isinstance(account, str):
            return self._refused(400, account)
        return account
