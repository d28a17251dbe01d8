"""APNs credentials: token (JWT) or certificate auth, checked and turned into TLS or a header."""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from typing import Any, Literal

import jwt
from aioapns.connection import (
    AuthorizationHeaderProvider,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import NameOID

from worker.core.config import Settings
from worker.core.vocabulary import ChannelConfig, PushNotification
from worker.providers.apns.payload import refuse
from worker.providers.base import InvalidCredentials
from worker.providers.http import (
    provider_tls_context,
)

# --- credentials -------------------------------------------------------------------------

AuthMethod = Literal["TOKEN", "CERTIFICATE"]
_AUTH_NAMES: dict[str, AuthMethod] = {
    "TOKEN": "TOKEN",
    "KEY": "TOKEN",  # Pinpoint's documentation calls token auth "key"
    "CERTIFICATE": "CERTIFICATE",
    "CERT": "CERTIFICATE",
}
CREDENTIAL_NAMES: dict[AuthMethod, str] = {"TOKEN": "token key", "CERTIFICATE": "certificate"}


def _text(mapping: Mapping[str, Any], key: str) -> str:
    value = mapping.get(key)
    return value.strip() if isinstance(value, str) else ""


def choose_auth(channel: ChannelConfig, notification: PushNotification) -> AuthMethod:
    """The message's ``PreferredAuthenticationMethod``, else the channel's
    ``DefaultAuthenticationMethod``, else whichever credential the channel has (the token key
    first: Apple recommends tokens)."""
    for source, name in (
        (notification.options, "PreferredAuthenticationMethod"),
        (channel.settings, "DefaultAuthenticationMethod"),
    ):
        wanted = _text(source, name)
        if wanted:
            method = _AUTH_NAMES.get(wanted.upper())
            if method is None:
                raise refuse(
                    channel.channel_type,
                    400,
                    f"{name} {wanted!r} is neither TOKEN nor CERTIFICATE",
                )
            return method
    if _text(channel.credentials, "TokenKey"):
        return "TOKEN"
    if _text(channel.credentials, "Certificate"):
        return "CERTIFICATE"
    raise refuse(
        channel.channel_type,
        403,
        f"The {channel.channel_type} channel has no credentials: set TokenKey (with TokenKeyId, "
        "TeamId and BundleId) or Certificate and PrivateKey",
    )


def required_credentials(channel: ChannelConfig, method: AuthMethod) -> dict[str, str]:
    """The credential members ``method`` needs, or :class:`Refused` naming the missing."""
    wanted = (
        ("TokenKey", "TokenKeyId", "TeamId", "BundleId")
        if method == "TOKEN"
        else ("Certificate", "PrivateKey")
    )
    merged = {**channel.settings, **channel.credentials}
    values = {name: _text(merged, name) for name in (*wanted, "BundleId")}
    missing = [name for name in wanted if not values[name]]
    if missing:
        raise refuse(
            channel.channel_type,
            403,
            f"The {channel.channel_type} channel has no {', '.join(missing)} for "
            f"{method.lower()} authentication",
        )
    return values


def credentials_fingerprint(method: AuthMethod, values: Mapping[str, str]) -> str:
    digest = hashlib.sha256(method.encode())
    for name in sorted(values):
        digest.update(b"\0" + name.encode() + b"=" + values[name].encode())
    return digest.hexdigest()


class ProviderToken(AuthorizationHeaderProvider):
    """The ``authorization: bearer <JWT>`` header for token auth.

    Apple refuses tokens older than an hour (ExpiredProviderToken) and ones renewed more often
    than every 20 minutes (TooManyProviderTokenUpdates); 40 minutes sits between.
    """

    LIFETIME_S = 40 * 60

    def __init__(self, key: ec.EllipticCurvePrivateKey, key_id: str, team_id: str) -> None:
        self._key = key
        self._key_id = key_id
        self._team_id = team_id
        self._issued_at = 0
        self._header = ""

    def get_header(self) -> str:
        now = int(time.time())
        if not self._header or now - self._issued_at >= self.LIFETIME_S:
            token = jwt.encode(
                {"iss": self._team_id, "iat": now},
                self._key,
                algorithm="ES256",
                headers={"kid": self._key_id},
            )
            self._issued_at, self._header = now, f"bearer {token}"
        return self._header

    def renew(self) -> None:
        """Sign a new token for the next request."""
        self._header = ""


def load_token_key(channel: ChannelConfig, pem: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise refuse(
            channel.channel_type,
            403,
            f"The {channel.channel_type} channel's TokenKey is not an APNs auth key "
            "(the PEM text of the .p8 file: an EC P-256 private key)",
        )
    return key


def check_private_key(channel: ChannelConfig, pem: str) -> None:
    try:
        serialization.load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        raise refuse(
            channel.channel_type,
            403,
            f"The {channel.channel_type} channel's PrivateKey is encrypted; it must be given "
            "unencrypted",
        ) from None
    except ValueError:
        raise refuse(
            channel.channel_type,
            403,
            f"The {channel.channel_type} channel's PrivateKey is not a PEM private key",
        ) from None


def load_certificate(channel: ChannelConfig, pem: str) -> x509.Certificate:
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise refuse(
            channel.channel_type,
            403,
            f"The {channel.channel_type} channel's Certificate is not a PEM certificate",
        ) from None
    expires = certificate.not_valid_after_utc
    if expires < datetime.datetime.now(datetime.UTC):
        raise refuse(
            channel.channel_type,
            403,
            f"The {channel.channel_type} channel's certificate expired on {expires:%Y-%m-%d}",
        )
    return certificate


def certificate_topic(certificate: x509.Certificate) -> str | None:
    """Apple puts the bundle id of an APNs certificate in its subject's UID."""
    for attribute in certificate.subject.get_attributes_for_oid(NameOID.USER_ID):
        value = attribute.value
        return value if isinstance(value, str) else value.decode()
    return None


def tls_context(
    settings: Settings, cert_pem: str | None = None, key_pem: str | None = None
) -> ssl.SSLContext:
    """The provider TLS trust, ALPN h2, and the client certificate, if any."""
    context = provider_tls_context(settings)
    context.set_alpn_protocols(["h2"])
    if cert_pem is not None and key_pem is not None:
        # load_cert_chain reads only from files. mkstemp creates the file 0600 and we remove
        # it as soon as OpenSSL has read it; the key then lives only in the SSL context.
        fd, path = tempfile.mkstemp(prefix="herald-apns-", suffix=".pem")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(cert_pem.strip() + "\n" + key_pem.strip() + "\n")
            # A password, even empty, stops OpenSSL prompting on the terminal for one.
            context.load_cert_chain(path, password=b"")
        finally:
            os.unlink(path)
    return context


def check_channel_credentials(values: Mapping[str, Any]) -> None:
    """Check a channel update's credentials (settings and secrets, wire names) before they
    are stored; raises InvalidCredentials saying what is wrong."""
    method = (values.get("DefaultAuthenticationMethod") or "").upper()
    if method and method not in ("CERTIFICATE", "TOKEN"):
        raise InvalidCredentials("DefaultAuthenticationMethod must be CERTIFICATE or TOKEN")
    has_token = bool(values.get("TokenKey"))
    has_cert = bool(values.get("Certificate"))
    if not has_token and not has_cert:
        raise InvalidCredentials("Either Certificate and PrivateKey, or TokenKey is required")
    if has_token:
        missing = [m for m in ("TokenKeyId", "TeamId", "BundleId") if not values.get(m)]
        if missing:
            raise InvalidCredentials(f"Token authentication needs {', '.join(missing)}")
        try:
            load_pem_private_key(values["TokenKey"].encode(), password=None)
        except (ValueError, TypeError):
            raise InvalidCredentials("TokenKey is not a PEM-encoded private key (.p8)") from None
    if has_cert:
        if not values.get("PrivateKey"):
            raise InvalidCredentials("Certificate authentication needs PrivateKey")
        try:
            x509.load_pem_x509_certificate(values["Certificate"].encode())
            load_pem_private_key(values["PrivateKey"].encode(), password=None)
        except (ValueError, TypeError):
            raise InvalidCredentials("Certificate or PrivateKey is not valid PEM") from None
    if method == "TOKEN" and not has_token:
        raise InvalidCredentials(
            "DefaultAuthenticationMethod is TOKEN but no TokenKey is configured"
        )
    if method == "CERTIFICATE" and not has_cert:
        raise InvalidCredentials(
            "DefaultAuthenticationMethod is CERTIFICATE but no Certificate is given"
        )
