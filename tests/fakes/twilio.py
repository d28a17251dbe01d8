"""A fake Twilio REST API on 127.0.0.1: Messages and Calls, with Twilio's JSON shapes.

It checks HTTP basic auth (account SID, auth token) the way Twilio does (401, code 20003),
answers ``POST /2010-04-01/Accounts/{sid}/Messages.json`` and ``.../Calls.json`` with 201 and
a resource whose ``sid`` is ``SM…`` / ``CA…`` (34 characters), records every request with its
form fields, and can be scripted, per ``To`` number or for all, to answer with any error
Twilio documents (``{"code", "message", "more_info", "status"}``) or to hang.

    with FakeTwilio() as fake:
        settings = Settings(twilio_url=fake.url, twilio_account_sid=fake.account_sid,
                            twilio_auth_token=fake.auth_token)
        fake.fail(400, 21211, to="+15550000001")
        fake.fail(429, 20429, retry_after=7, times=1)
        fake.hang(to="+15550000002")
        fake.reply_raw(502, "<html>Bad Gateway</html>")
        ...
        assert fake.messages[0].field("Body") == "hello"
"""

from __future__ import annotations

import base64
import secrets
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.http import FakeHttpServer, RecordedRequest, Reply, retry_after_header
from tests.fakes.tls import TlsFiles

DEFAULT_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
DEFAULT_AUTH_TOKEN = "fake-twilio-auth-token"
API_VERSION = "2010-04-01"

# Twilio's own wording for the errors tests script most (https://www.twilio.com/docs/errors/).
ERROR_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21211: "The 'To' number is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the "
    "'To' number",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21602: "Message body is required.",
    21205: "Url parameter is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number is not currently reachable via SMS",
    21614: "'To' number is not a valid mobile number",
}


class TwilioRequest(RecordedRequest):
    """One request the fake received, read the way Twilio reads it."""

    @property
    def account_sid(self) -> str | None:
        """From the path ``/2010-04-01/Accounts/{sid}/…``."""
        parts = self._path_parts()
        return parts[2] if len(parts) == 4 and parts[:2] == [API_VERSION, "Accounts"] else None

    @property
    def resource(self) -> str:
        """ "Messages", "Calls" or "" for anything else."""
        name = self._path_parts()[-1]
        if self.method == "POST" and self.account_sid and name in ("Messages.json", "Calls.json"):
            return name.removesuffix(".json")
        return ""

    @property
    def auth(self) -> tuple[str, str] | None:
        """The HTTP basic credentials."""
        scheme, _, value = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        return user, password

    def field(self, name: str) -> str | None:
        values = self.fields(name)
        return values[0] if values else None

    def fields(self, name: str) -> list[str]:
        return parse_qs(self.body.decode(), keep_blank_values=True).get(name, [])

    def _path_parts(self) -> list[str]:
        return self.path.split("?")[0].strip("/").split("/")


class FakeTwilio(FakeHttpServer):
    request_type = TwilioRequest

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        tls: TlsFiles | None = None,
    ) -> None:
        """``tls``: serve HTTPS with this certificate (trust ``tls.ca_path`` in the client)."""
        super().__init__(tls=tls or False)
        self.account_sid = account_sid
        self.auth_token = auth_token

    # -- scripting -----------------------------------------------------------------------

    def fail(
        self,
        status: int,
        code: int | None = None,
        message: str | None = None,
        *,
        to: str | None = None,
        retry_after: float | None = None,
        times: int | None = None,
    ) -> None:
        """Answer requests (to ``to``, or all) with Twilio's error JSON."""
        body = _error_body(status, code if code is not None else 20000 + status, message)
        reply = Reply(status, body, retry_after_header(retry_after))
        self.script(to, lambda _r: reply, times)

    def hang(self, *, to: str | None = None, times: int | None = None) -> None:
        """Never answer (until :meth:`stop`)."""
        self.script(to, lambda _r: Reply(0, hang=True), times)

    def reply_raw(
        self, status: int, body: str, *, to: str | None = None, times: int | None = None
    ) -> None:
        """Answer with a non-JSON body, as a proxy or load balancer in front would."""
        reply = Reply(status, body, {"Content-Type": "text/html"})
        self.script(to, lambda _r: reply, times)

    # -- what was received ---------------------------------------------------------------

    @property
    def requests(self) -> list[TwilioRequest]:  # type: ignore[override]
        return [r for r in super().requests if isinstance(r, TwilioRequest)]

    @property
    def messages(self) -> list[TwilioRequest]:
        return [r for r in self.requests if r.resource == "Messages"]

    @property
    def calls(self) -> list[TwilioRequest]:
        return [r for r in self.requests if r.resource == "Calls"]

    # -- the protocol --------------------------------------------------------------------

    def handle(self, request: RecordedRequest) -> Reply:
        assert isinstance(request, TwilioRequest)
        if request.auth != (self.account_sid, self.auth_token):
            return Reply(
                401,
                _error_body(401, 20003, "Authenticate")
                | {"detail": "Your AccountSid or AuthToken was incorrect."},
                {"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
        if not request.resource or request.account_sid != self.account_sid:
            return Reply(404, _error_body(404, 20404, None))
        scripted = self._scripted(request.field("To"), request)
        if scripted is not None:
            return scripted
        return self._create(request)

    def _create(self, request: TwilioRequest) -> Reply:
        to, sender = request.field("To"), request.field("From")
        if not to:
            return Reply(400, _error_body(400, 21604, None))
        if not sender:
            return Reply(400, _error_body(400, 21603, None))
        now = formatdate(usegmt=True)
        account = self.account_sid
        common: dict[str, Any] = {
            "account_sid": account,
            "api_version": API_VERSION,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "from": sender,
            "to": to,
            "status": "queued",
            "price": None,
            "price_unit": "USD",
        }
        if request.resource == "Messages":
            media = request.fields("MediaUrl")
            if not request.field("Body") and not media:
                return Reply(400, _error_body(400, 21602, None))
            sid = "SM" + secrets.token_hex(16)
            body = common | {
                "sid": sid,
                "body": request.field("Body") or "",
                "num_media": str(len(media)),
                "num_segments": "1",
                "date_sent": None,
                "error_code": None,
                "error_message": None,
                "messaging_service_sid": None,
                "uri": f"/{API_VERSION}/Accounts/{account}/Messages/{sid}.json",
                "subresource_uris": {
                    "media": f"/{API_VERSION}/Accounts/{account}/Messages/{sid}/Media.json"
                },
            }
        else:
            if not (request.field("Twiml") or request.field("Url")):
                return Reply(400, _error_body(400, 21205, None))
            sid = "CA" + secrets.token_hex(16)
            body = common | {
                "sid": sid,
                "parent_call_sid": None,
                "start_time": None,
                "end_time": None,
                "duration": None,
                "answered_by": None,
                "caller_name": None,
                "uri": f"/{API_VERSION}/Accounts/{account}/Calls/{sid}.json",
            }
        return Reply(201, body)


def _error_body(status: int, code: int, message: str | None) -> dict[str, Any]:
    return {
        "code": code,
        "message": message or ERROR_MESSAGES.get(code, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
