"""A fake Baidu Cloud Push REST 3.0 server (``POST /rest/3.0/push/single_device``).

It checks what Baidu checks: a form-encoded body with ``apikey``, ``timestamp`` (within ten
minutes), ``channel_id``, ``msg_type``, ``msg`` and a ``sign`` equal to
``md5(urlencode("POST" + URL + sorted k=v pairs + secret_key))`` where URL is the URL the client
actually requested (scheme, ``Host`` header, path) and ``urlencode`` is PHP's. Answers are
``{"request_id", "response_params": {"msg_id", "send_time"}}`` or
``{"request_id", "error_code", "error_msg"}``.

The signature check here is written independently of Herald's (byte by byte), so a slip in
either shows up as a 401 / 30603.

Usage::

    with FakeBaidu() as baidu:
        baidu.fail("3712345678901234567", 30608)
        settings = Settings(baidu_url=baidu.base_url)
        ... credentials={"ApiKey": baidu.api_key, "SecretKey": baidu.secret_key}
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time

from tests.fakes.http import FakeHttpServer, RecordedRequest, Reply

SINGLE_DEVICE_PATH = "/rest/3.0/push/single_device"

# error_code → (HTTP status, error_msg) as Baidu names them.
BAIDU_ERRORS: dict[int, tuple[int, str]] = {
    30600: (500, "Internal Server Error"),
    30601: (405, "Method Not Allowed"),
    30602: (400, "Request Params Not Valid"),
    30603: (401, "Authentication Failed"),
    30604: (402, "Quota Use Up Payment Required"),
    30605: (404, "Data Required Not Found"),
    30606: (400, "Request Time Expires Timeout"),
    30607: (400, "Channel Token Timeout"),
    30608: (404, "Bind Relation Not Found"),
    30699: (503, "Requests Are Too Frequent To Be Temporarily Rejected"),
}

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def php_urlencode(text: str) -> str:
    out = []
    for byte in text.encode():
        if byte in _UNRESERVED:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def expected_sign(url: str, form: dict[str, str], secret_key: str) -> str:
    pairs = "".join(f"{k}={form[k]}" for k in sorted(form) if k != "sign")
    return hashlib.md5(php_urlencode("POST" + url + pairs + secret_key).encode()).hexdigest()


class FakeBaidu(FakeHttpServer):
    def __init__(
        self,
        *,
        api_key: str = "herald0test0api0key00000",
        secret_key: str = "herald0test0secret0key0000000000",
        tls: bool = False,
    ) -> None:
        super().__init__(tls=tls)
        self.api_key = api_key
        self.secret_key = secret_key
        self._request_ids = itertools.count(1_000_000)
        self._msg_ids = itertools.count(7_000_000_000_000_000_000)

    # -- scripting --

    def fail(
        self,
        channel_id: str,
        error_code: int,
        *,
        status: int | None = None,
        error_msg: str | None = None,
        times: int | None = None,
    ) -> None:
        """Answer pushes to ``channel_id`` with Baidu error ``error_code``."""
        default_status, default_msg = BAIDU_ERRORS.get(error_code, (400, "Error"))
        code = status if status is not None else default_status
        text = error_msg if error_msg is not None else default_msg
        self.script(channel_id, lambda _r: self._error(error_code, text, code), times)

    def hang(self, channel_id: str, seconds: float, *, times: int | None = None) -> None:
        self.script(channel_id, lambda _r: self._success(seconds), times)

    # -- records --

    def pushes(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.split("?")[0].endswith(SINGLE_DEVICE_PATH)]

    # -- protocol --

    def handle(self, request: RecordedRequest) -> Reply:
        path = request.path.split("?")[0]
        if not path.endswith(SINGLE_DEVICE_PATH):
            return self._error(30601, "Method Not Allowed", 404)
        if request.method != "POST":
            return self._error(30601, "Method Not Allowed", 405)
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            return self._error(30602, "Request Params Not Valid, form body required", 400)
        if not request.headers.get("user-agent", "").startswith("BCCS_SDK/3.0"):
            return self._error(30602, "Request Params Not Valid, bad User-Agent", 400)
        form = request.form()
        for name in ("apikey", "timestamp", "sign", "channel_id", "msg"):
            if not form.get(name):
                return self._error(30602, f"Request Params Not Valid, {name} required", 400)
        if form["apikey"] != self.api_key:
            return self._error(30603, "Authentication Failed, apikey not found", 401)
        if form["sign"] != expected_sign(request.url, form, self.secret_key):
            return self._error(30603, "Authentication Failed, signature mismatch", 401)
        try:
            timestamp = int(form["timestamp"])
        except ValueError:
            return self._error(30602, "Request Params Not Valid, timestamp", 400)
        if abs(time.time() - timestamp) > 600:
            return self._error(30606, "Request Time Expires Timeout", 400)
        msg_type = form.get("msg_type", "0")
        if msg_type not in ("0", "1"):
            return self._error(30602, "Request Params Not Valid, msg_type", 400)
        try:
            msg = json.loads(form["msg"])
        except ValueError:
            return self._error(30602, "Request Params Not Valid, msg is not json", 400)
        if msg_type == "1" and (not isinstance(msg, dict) or "description" not in msg):
            return self._error(30602, "Request Params Not Valid, description required", 400)
        if "msg_expires" in form and not 0 <= int(form["msg_expires"]) <= 604800:
            return self._error(30602, "Request Params Not Valid, msg_expires", 400)
        scripted = self._scripted(form["channel_id"], request)
        if scripted is not None:
            return scripted
        return self._success()

    def _success(self, delay_s: float = 0.0) -> Reply:
        return Reply(
            200,
            {
                "request_id": next(self._request_ids),
                "response_params": {
                    "msg_id": str(next(self._msg_ids)),
                    "send_time": int(time.time()),
                },
            },
            delay_s=delay_s,
        )

    def _error(self, code: int, message: str, status: int) -> Reply:
        return Reply(
            status,
            {"request_id": next(self._request_ids), "error_code": code, "error_msg": message},
        )
