"""A fake Amazon Device Messaging server: token endpoint and send, as Amazon documents them.

``POST /auth/o2/token`` takes the client-credentials grant (``scope=messaging:push``) and issues
bearer tokens with ``expires_in``; ``POST /messaging/registrations/{id}/messages`` checks the
token and the ``X-Amzn-Type-Version`` / ``X-Amzn-Accept-Type`` headers, validates the body and
answers ``{"registrationID": …}`` with an ``x-amzn-RequestId`` header, or ``{"reason": …}``.

Usage::

    with FakeAdm() as adm:
        adm.fail("amzn1.adm-registration.v3.dead", "Unregistered")
        adm.canonicalize("old-id", "new-id")
        adm.expire_token_once()
        settings = Settings(adm_url=adm.base_url)
        ... credentials={"ClientId": adm.client_id, "ClientSecret": adm.client_secret}
"""

from __future__ import annotations

import itertools
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from tests.fakes.http import FakeHttpServer, RecordedRequest, Reply, retry_after_header

TYPE_VERSION = "com.amazon.device.messaging.ADMMessage@1.0"
ACCEPT_TYPE = "com.amazon.device.messaging.ADMSendResult@1.0"
SEND_PREFIX = "/messaging/registrations/"

# Amazon's documented send errors: reason → HTTP status.
ADM_REASONS: dict[str, int] = {
    "InvalidRegistrationId": 400,
    "InvalidData": 400,
    "InvalidConsolidationKey": 400,
    "InvalidExpiration": 400,
    "InvalidChecksum": 400,
    "InvalidType": 400,
    "Unregistered": 410,
    "AccessTokenExpired": 401,
    "MessageTooLarge": 413,
    "MaxRateExceeded": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
}


@dataclass
class _Token:
    value: str
    valid: bool = True


class FakeAdm(FakeHttpServer):
    TOKEN_PATH = "/auth/o2/token"

    def __init__(
        self,
        *,
        client_id: str = "amzn1.application-oa2-client.herald-test",
        client_secret: str = "herald-test-secret",
        token_lifetime_s: int = 3600,
        tls: bool = False,
    ) -> None:
        super().__init__(tls=tls)
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime_s = token_lifetime_s
        self._tokens: dict[str, _Token] = {}
        self._numbers = itertools.count(1)
        self._canonical: dict[str, str] = {}
        self._expire_once = False
        self.request_ids: list[str] = []  # x-amzn-RequestId of each successful send, in order

    # -- scripting --

    def fail(
        self,
        registration_id: str,
        reason: str,
        *,
        status: int | None = None,
        retry_after: int | str | None = None,
        times: int | None = None,
    ) -> None:
        """Answer sends to ``registration_id`` with ``{"reason": reason}``."""
        code = status if status is not None else ADM_REASONS[reason]
        headers = retry_after_header(retry_after)
        self.script(registration_id, lambda _r: Reply(code, {"reason": reason}, headers), times)

    def hang(self, registration_id: str, seconds: float, *, times: int | None = None) -> None:
        self.script(registration_id, lambda r: self._success(r, registration_id, seconds), times)

    def canonicalize(self, registration_id: str, canonical_id: str) -> None:
        """Answer sends to ``registration_id`` with a different ``registrationID``."""
        with self._lock:
            self._canonical[registration_id] = canonical_id

    def expire_token_once(self) -> None:
        """The next send is answered 401 AccessTokenExpired and its token stops working."""
        self._expire_once = True

    # -- records --

    @property
    def token_issuances(self) -> int:
        with self._lock:
            return len(self._tokens)

    def token_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.lower() == self.TOKEN_PATH]

    def sends(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(SEND_PREFIX)]

    # -- protocol --

    def handle(self, request: RecordedRequest) -> Reply:
        path = request.path.split("?")[0]
        if request.method == "POST" and path.lower() == self.TOKEN_PATH:
            return self._token(request)
        if request.method == "POST" and path.startswith(SEND_PREFIX) and path.endswith("/messages"):
            registration_id = unquote(path[len(SEND_PREFIX) : -len("/messages")])
            return self._send(request, registration_id)
        return Reply(404, {"reason": "NotFound"})

    def _token(self, request: RecordedRequest) -> Reply:
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return Reply(
                400, {"error": "invalid_request", "error_description": "form body required"}
            )
        form = request.form()
        if form.get("grant_type") != "client_credentials":
            return Reply(400, {"error": "unsupported_grant_type", "error_description": "bad grant"})
        if form.get("scope") != "messaging:push":
            return Reply(400, {"error": "invalid_scope", "error_description": "bad scope"})
        if (
            form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
        ):
            return Reply(
                401,
                {"error": "invalid_client", "error_description": "Client authentication failed"},
            )
        token = f"Atc|fake-{next(self._numbers)}"
        with self._lock:
            self._tokens[token] = _Token(token)
        return Reply(
            200,
            {
                "access_token": token,
                "expires_in": self.token_lifetime_s,
                "scope": "messaging:push",
                "token_type": "bearer",
            },
        )

    def _send(self, request: RecordedRequest, registration_id: str) -> Reply:
        headers = request.headers
        token_value = headers.get("authorization", "").removeprefix("Bearer ")
        with self._lock:
            token = self._tokens.get(token_value)
            expire_now = self._expire_once and token is not None and token.valid
            if expire_now:
                self._expire_once = False
                assert token is not None
                token.valid = False
        if token is None or not token.valid:
            return Reply(401, {"reason": "AccessTokenExpired"})
        if headers.get("x-amzn-type-version") != TYPE_VERSION:
            return Reply(400, {"reason": "InvalidType"})
        if headers.get("x-amzn-accept-type") != ACCEPT_TYPE:
            return Reply(406, {"reason": "InvalidAcceptType"})
        try:
            body = request.json()
        except ValueError:
            return Reply(400, {"reason": "InvalidData"})
        error = self._invalid(body)
        if error is not None:
            return error
        scripted = self._scripted(registration_id, request)
        if scripted is not None:
            return scripted
        return self._success(request, registration_id)

    @staticmethod
    def _invalid(body: Any) -> Reply | None:
        if not isinstance(body, dict):
            return Reply(400, {"reason": "InvalidData"})
        data = body.get("data")
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            return Reply(400, {"reason": "InvalidData"})
        if len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()) > 6 * 1024:
            return Reply(413, {"reason": "MessageTooLarge"})
        if "consolidationKey" in body and not isinstance(body["consolidationKey"], str):
            return Reply(400, {"reason": "InvalidConsolidationKey"})
        expires = body.get("expiresAfter")
        if expires is not None and (
            not isinstance(expires, int) or isinstance(expires, bool) or not 1 <= expires <= 2678400
        ):
            return Reply(400, {"reason": "InvalidExpiration"})
        return None

    def _success(
        self, request: RecordedRequest, registration_id: str, delay_s: float = 0.0
    ) -> Reply:
        request_id = str(uuid.uuid4())
        with self._lock:
            canonical = self._canonical.get(registration_id, registration_id)
            self.request_ids.append(request_id)
        return Reply(
            200,
            {"registrationID": canonical},
            {"x-amzn-RequestId": request_id},
            delay_s=delay_s,
        )
