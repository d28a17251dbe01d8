"""A fake Firebase Cloud Messaging HTTP v1 server with its OAuth 2.0 token endpoint.

It speaks the real protocol: the token endpoint takes the JWT-bearer grant and verifies the
RS256 assertion against the service account's public key; ``messages:send`` requires a valid
``Authorization: Bearer`` token issued for that project and answers with Google's error bodies
(``google.rpc.Status`` with a ``google.firebase.fcm.v1.FcmError`` detail).

Also here: :func:`make_service_account`.

Usage::

    with FakeFcm() as fcm:
        account = fcm.add_service_account(project_id="demo")   # the ServiceJson, as a dict
        fcm.fail("dead-token", "UNREGISTERED")
        settings = Settings(fcm_url=fcm.base_url, fcm_token_url=fcm.token_url)
        ...
        assert fcm.token_issuances == 1
        assert fcm.sends()[0].json()["message"]["token"] == "dead-token"
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.http import FakeHttpServer, RecordedRequest, Reply, retry_after_header

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@functools.lru_cache(maxsize=8)
def _rsa_key(slot: int) -> rsa.RSAPrivateKey:
    # Key generation is the slow part of a test; distinct slots give distinct keys.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --- service accounts -----------------------------------------------------------------------

_account_numbers = itertools.count(1)


GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


def make_service_account(
    token_uri: str = GOOGLE_TOKEN_URI, *, project_id: str = "herald-test", key_slot: int = 0
) -> dict[str, str]:
    """A Google service-account JSON (as a dict) with an RSA key. Its ``token_uri`` is what
    Google writes there; Herald ignores it (tokens come from ``HERALD_FCM_TOKEN_URL``)."""
    number = next(_account_numbers)
    key = _rsa_key(key_slot)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": f"key-{number:04d}",
        "private_key": pem,
        "client_email": f"sender-{number}@{project_id}.iam.gserviceaccount.com",
        "client_id": str(100000 + number),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }


# --- the FCM fake -----------------------------------------------------------------------------

# Google's error bodies per FCM error code: (HTTP status, google.rpc status, message).
FCM_ERROR_SHAPES: dict[str, tuple[int, str, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "INVALID_ARGUMENT": (
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
    ),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for quota metric 'Send requests'",
    ),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}


def fcm_error_body(
    code: str, *, message: str | None = None, field: str | None = None
) -> dict[str, Any]:
    """A ``google.rpc.Status`` body as FCM v1 returns it.

    With ``field`` it is a request-value error (``google.rpc.BadRequest`` naming the field,
    no FcmError), like Google's "Invalid value at 'message.data[0].value'".
    """
    status, rpc_status, default_message = FCM_ERROR_SHAPES[code]
    if field is not None:
        text = message or f"Invalid value at '{field}'"
        detail: dict[str, Any] = {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": text}],
        }
    else:
        text = message or default_message
        detail = {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
    return {"error": {"code": status, "message": text, "status": rpc_status, "details": [detail]}}


@dataclass
class _Issued:
    token: str
    client_email: str
    project_id: str
    valid: bool = True


class FakeFcm(FakeHttpServer):
    """FCM HTTP v1 (``/v1/projects/{id}/messages:send``) and its token endpoint (``/token``)."""

    TOKEN_PATH = "/token"

    def __init__(self, *, token_lifetime_s: int = 3600, tls: bool = False) -> None:
        super().__init__(tls=tls)
        self.token_lifetime_s = token_lifetime_s
        self._accounts: dict[str, tuple[dict[str, str], Any]] = {}  # client_email → (info, pub)
        self._issued: dict[str, _Issued] = {}
        self._token_numbers = itertools.count(1)
        self._message_numbers = itertools.count(1)
        self._token_refusal: tuple[int, str, str] | None = None
        self._token_delay_s = 0.0

    @property
    def token_url(self) -> str:
        """The token endpoint: Herald's ``HERALD_FCM_TOKEN_URL`` (and the assertion's
        audience)."""
        return self.base_url + self.TOKEN_PATH

    # -- set-up --

    def add_service_account(
        self, *, project_id: str = "herald-test", key_slot: int = 0
    ) -> dict[str, str]:
        """Create a service account this fake trusts; returns its JSON as a dict."""
        info = make_service_account(project_id=project_id, key_slot=key_slot)
        self.trust(info)
        return info

    def trust(self, info: dict[str, str]) -> None:
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        with self._lock:
            self._accounts[info["client_email"]] = (info, key.public_key())

    # -- scripting --

    def fail(
        self,
        token: str,
        code: str,
        *,
        retry_after: int | str | None = None,
        times: int | None = None,
        message: str | None = None,
        field: str | None = None,
    ) -> None:
        """Answer sends to ``token`` with FCM error ``code`` (see :data:`FCM_ERROR_SHAPES`)."""
        status = FCM_ERROR_SHAPES[code][0]
        headers = retry_after_header(retry_after)
        body = fcm_error_body(code, message=message, field=field)
        self.script(token, lambda _request: Reply(status, body, headers), times)

    def hang(self, token: str, seconds: float, *, times: int | None = None) -> None:
        """Answer sends to ``token`` only after ``seconds`` (success, if anyone still listens)."""
        self.script(token, lambda request: self._success(request, delay_s=seconds), times)

    def refuse_tokens(
        self,
        error: str = "invalid_grant",
        description: str = "Invalid JWT Signature.",
        status: int = 400,
    ) -> None:
        """Make the token endpoint refuse every grant from now on."""
        self._token_refusal = (status, error, description)

    def delay_tokens(self, seconds: float) -> None:
        self._token_delay_s = seconds

    def revoke_tokens(self) -> None:
        """Invalidate every access token issued so far (sends with them get 401)."""
        with self._lock:
            for issued in self._issued.values():
                issued.valid = False

    # -- records --

    @property
    def token_issuances(self) -> int:
        with self._lock:
            return len(self._issued)

    def token_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == self.TOKEN_PATH]

    def sends(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/messages:send")]

    # -- protocol --

    def handle(self, request: RecordedRequest) -> Reply:
        if request.method == "POST" and request.path == self.TOKEN_PATH:
            return self._token(request)
        if (
            request.method == "POST"
            and request.path.startswith("/v1/projects/")
            and request.path.endswith("/messages:send")
        ):
            return self._send(request)
        return Reply(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})

    def _token(self, request: RecordedRequest) -> Reply:
        def refuse(description: str, error: str = "invalid_grant", status: int = 400) -> Reply:
            return Reply(status, {"error": error, "error_description": description})

        if self._token_refusal is not None:
            status, error, description = self._token_refusal
            return refuse(description, error, status)
        form = request.form()
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return refuse("Invalid grant_type", "unsupported_grant_type")
        assertion = form.get("assertion", "")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return refuse("Invalid JWT: malformed")
        with self._lock:
            account = self._accounts.get(str(unverified.get("iss")))
        if account is None:
            return refuse("Invalid grant: account not found")
        info, public_key = account
        if header.get("alg") != "RS256" or header.get("kid") != info["private_key_id"]:
            return refuse("Invalid JWT: wrong alg or kid")
        try:
            claims = jwt.decode(
                assertion,
                public_key,
                algorithms=["RS256"],
                audience=self.token_url,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except jwt.InvalidSignatureError:
            return refuse("Invalid JWT Signature.")
        except jwt.PyJWTError as exc:
            return refuse(f"Invalid JWT: {exc}")
        if claims["exp"] - claims["iat"] > 3600:
            return refuse("Invalid JWT: Token must be a short-lived token (60 minutes)")
        if FCM_SCOPE not in str(claims["scope"]).split():
            return refuse("Invalid OAuth scope or ID token audience provided.", "invalid_scope")
        token = f"ya29.fake-{next(self._token_numbers)}"
        with self._lock:
            self._issued[token] = _Issued(token, info["client_email"], info["project_id"])
        return Reply(
            200,
            {"access_token": token, "expires_in": self.token_lifetime_s, "token_type": "Bearer"},
            delay_s=self._token_delay_s,
        )

    def _send(self, request: RecordedRequest) -> Reply:
        project = request.path[len("/v1/projects/") : -len("/messages:send")]
        authorization = request.headers.get("authorization", "")
        with self._lock:
            issued = self._issued.get(authorization.removeprefix("Bearer "))
        if not authorization.startswith("Bearer ") or issued is None or not issued.valid:
            return Reply(
                401,
                {
                    "error": {
                        "code": 401,
                        "message": "Request had invalid authentication credentials. Expected "
                        "OAuth 2 access token, login cookie or other valid authentication "
                        "credential.",
                        "status": "UNAUTHENTICATED",
                    }
                },
            )
        if issued.project_id != project:
            return Reply(
                403,
                {
                    "error": {
                        "code": 403,
                        "message": f"Permission 'cloudmessaging.messages.create' denied on "
                        f"resource '//cloudresourcemanager.googleapis.com/projects/{project}'",
                        "status": "PERMISSION_DENIED",
                    }
                },
            )
        try:
            body = request.json()
            message = body["message"]
            token = message["token"]
        except (ValueError, KeyError, TypeError):
            return Reply(
                400,
                fcm_error_body("INVALID_ARGUMENT", message="Invalid JSON payload", field="message"),
            )
        data = message.get("data", {})
        if not isinstance(data, dict):
            return Reply(400, fcm_error_body("INVALID_ARGUMENT", field="message.data"))
        for index, (key, value) in enumerate(data.items()):
            if not isinstance(value, str):
                return Reply(
                    400, fcm_error_body("INVALID_ARGUMENT", field=f"message.data[{index}].value")
                )
            if key in ("from", "gcm") or key.startswith("google"):
                return Reply(
                    400, fcm_error_body("INVALID_ARGUMENT", field=f"message.data[{index}].key")
                )
        size = sum(len(k.encode()) + len(v.encode()) for k, v in data.items())
        if size > 4096:
            return Reply(400, fcm_error_body("INVALID_ARGUMENT", message="Message is too big"))
        scripted = self._scripted(str(token), request)
        if scripted is not None:
            return scripted
        return self._success(request, project=project)

    def _success(
        self, request: RecordedRequest, *, project: str | None = None, delay_s: float = 0.0
    ) -> Reply:
        if project is None:
            project = request.path[len("/v1/projects/") : -len("/messages:send")]
        return Reply(
            200,
            {"name": f"projects/{project}/messages/0:{next(self._message_numbers):016d}"},
            delay_s=delay_s,
        )
