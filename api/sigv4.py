"""AWS Signature Version 4 verification, over the exact bytes received.

Written here rather than borrowed: botocore only signs, and server-side verifiers in the wild
tend to re-serialise the request (and so accept or reject the wrong things). This follows
https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html as boto3, the AWS
CLI and the other SDKs sign for a rest-json service (no ``X-Amz-Content-SHA256`` header; the
``Host`` header includes the port; path segments encoded once more in the canonical URI).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote_to_bytes

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "mobiletargeting"
MAX_SKEW = timedelta(minutes=15)
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]{64})\s*$"
)
_SPACES = re.compile(r"\s+")


class SignatureError(Exception):
    """The request is not signed, or not signed right. The message is safe to return."""


@dataclass(frozen=True)
class Verified:
    access_key_id: str
    region: str


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    key = _hmac(f"AWS4{secret}".encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def canonical_query(raw_query: str) -> str:
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        key, _, value = part.partition("=")
        pairs.append(
            # Bytes: a percent-encoded sequence that is not UTF-8 must survive unchanged.
            (quote(unquote_to_bytes(key.replace("+", " ")), safe="-_.~"),
             quote(unquote_to_bytes(value.replace("+", " ")), safe="-_.~"))
        )
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, Sequence[str]],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    canonical_headers = "".join(
        f"{name}:{','.join(_SPACES.sub(' ', v.strip()) for v in headers.get(name, ()))}\n"
        for name in signed_headers
    )
    payload_hash = headers.get("x-amz-content-sha256", [None])[0] or hashlib.sha256(
        body
    ).hexdigest()
    return "\n".join(
        (
            method.upper(),
            quote(raw_path or "/", safe="/~"),
            canonical_query(raw_query),
            canonical_headers,
            ";".join(signed_headers),
            payload_hash,
        )
    )


@dataclass(frozen=True)
class Claim:
    """What a request's signature headers claim, checked as far as can be without the body:
    shape, scope, date within the allowed skew, and a known access key."""

    access_key_id: str
    secret: str
    scope_date: str
    scope_region: str
    signed_headers: list[str]
    signature: str
    amz_date: str


def check_headers(
    *,
    headers: Mapping[str, Sequence[str]],
    secret_for: Callable[[str], str | None],
    region: str | None,
    now: datetime | None = None,
) -> Claim:
    """Everything :func:`verify` checks that does not need the body; raise SignatureError.

    The API calls this before reading a body, so an unsigned client, or one signing with a
    key Herald does not know or a stale date, is refused without its upload being read.
    ``headers`` maps lower-case names to every value received. ``secret_for`` returns the
    secret of an access key id, or None for an unknown or revoked key. ``region`` None
    accepts any region in the credential scope.
    """
    authorization = headers.get("authorization", [""])[0]
    if not authorization:
        raise SignatureError("Missing Authentication Token: sign the request with AWS SigV4")
    match = _AUTH.match(authorization)
    if match is None:
        raise SignatureError(
            "Authorization header is not a valid AWS4-HMAC-SHA256 signature"
        )
    credential = match["credential"].split("/")
    if len(credential) != 5 or credential[4] != "aws4_request":
        raise SignatureError("Credential must be <key>/<date>/<region>/<service>/aws4_request")
    key_id, scope_date, scope_region, scope_service, _ = credential
    if scope_service != SERVICE:
        raise SignatureError(f"Credential should be scoped to correct service: '{SERVICE}'")
    if region is not None and scope_region != region:
        raise SignatureError(f"Credential should be scoped to a valid region: '{region}'")
    signed = match["signed"].split(";")
    if "host" not in signed or signed != sorted(signed):
        raise SignatureError("SignedHeaders must be sorted and include host")
    amz_date = headers.get("x-amz-date", [""])[0]
    if not amz_date or ("x-amz-date" not in signed and "date" not in signed):
        raise SignatureError("Missing or unsigned X-Amz-Date header")
    try:
        moment = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise SignatureError("X-Amz-Date must look like 20261127T081500Z") from None
    if scope_date != amz_date[:8]:
        raise SignatureError("Credential date does not match X-Amz-Date")
    now = now or datetime.now(UTC)
    if abs(now - moment) > MAX_SKEW:
        raise SignatureError(
            "Signature expired: X-Amz-Date is more than 15 minutes from the server's time "
            f"({now.strftime('%Y%m%dT%H%M%SZ')})"
        )
    secret = secret_for(key_id)
    if secret is None:
        raise SignatureError("The security token included in the request is invalid")
    return Claim(key_id, secret, scope_date, scope_region, signed, match["signature"], amz_date)


def verify(
    *,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Mapping[str, Sequence[str]],
    body: bytes,
    secret_for: Callable[[str], str | None],
    region: str | None,
    now: datetime | None = None,
    claim: Claim | None = None,
) -> Verified:
    """Check the request's signature; raise SignatureError saying what is wrong.

    ``claim`` is :func:`check_headers`' answer when the caller already has it; the other
    arguments are as there.
    """
    if claim is None:
        claim = check_headers(headers=headers, secret_for=secret_for, region=region, now=now)
    claimed_hash = headers.get("x-amz-content-sha256", [""])[0]
    if claimed_hash and not hmac.compare_digest(
        claimed_hash.encode(), hashlib.sha256(body).hexdigest().encode()
    ):
        # The signature covers this header, not the body: unchecked, a captured request
        # could carry any body. Unsigned payloads are not accepted.
        raise SignatureError("X-Amz-Content-SHA256 does not match the request body")
    request = canonical_request(method, raw_path, raw_query, headers, claim.signed_headers, body)
    scope = f"{claim.scope_date}/{claim.scope_region}/{SERVICE}/aws4_request"
    string_to_sign = "\n".join(
        (ALGORITHM, claim.amz_date, scope, hashlib.sha256(request.encode()).hexdigest())
    )
    expected = hmac.new(
        signing_key(claim.secret, claim.scope_date, claim.scope_region),
        string_to_sign.encode(),
        hashlib.sha256,
    ).hexdigest()
    if not hmac.compare_digest(expected, claim.signature):
        raise SignatureError(
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return Verified(access_key_id=claim.access_key_id, region=claim.scope_region)
