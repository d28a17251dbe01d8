"""E-mail over SMTP (aiosmtplib), configured by ``HERALD_SMTP_URL``.

``smtp://user:pass@host:port``, or ``smtps://…`` for implicit TLS. A small pool of
authenticated connections is reused across sends.

On ``smtp://`` the connection is upgraded with STARTTLS whenever the server offers it
(``?starttls=true``: always, failing if the server cannot; ``?starttls=false``: never).
Credentials are never sent over a connection without TLS — a relay that offers no STARTTLS
gets no AUTH and the send fails saying why — unless the operator opts in with
``?allow_plain_auth=true`` (a relay on the same host, or a private network they trust).
"""

from __future__ import annotations

import asyncio
import email.policy
import ssl
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from worker.core.addresses import check_email_address
from worker.core.config import Settings
from worker.core.vocabulary import (
    NO_ANSWER_STATUS,
    NO_CONNECTION_STATUS,
    ChannelConfig,
    DeliveryStatus,
    EmailContent,
    Outcome,
    OutgoingMessage,
)

POOL_SIZE = 8
_NO_ANSWER = Outcome(DeliveryStatus.TIMEOUT, NO_ANSWER_STATUS, "SMTP server did not answer in time")


class PlainAuthRefused(aiosmtplib.SMTPException):
    """The server offered no TLS, and credentials are not sent in clear."""


# RFC 3207 §4: 530 "Must issue a STARTTLS command first".
_PLAIN_AUTH_REFUSED = Outcome(
    DeliveryStatus.PERMANENT_FAILURE,
    530,
    "Herald did not send the SMTP credentials: the server offered no STARTTLS. Use smtps://, "
    "a relay that offers STARTTLS, or add allow_plain_auth=true to HERALD_SMTP_URL",
)


def _flag(query: dict[str, list[str]], name: str) -> bool | None:
    values = query.get(name)
    if not values:
        return None
    return values[0].lower() in ("1", "true", "yes")


def _no_connection(what: str, exc: Exception) -> Outcome:
    return Outcome(
        DeliveryStatus.TEMPORARY_FAILURE, NO_CONNECTION_STATUS, f"SMTP connection {what}: {exc}"
    )


def _status_for(code: int) -> DeliveryStatus:
    """RFC 5321 §4.2.1: 2yz completed, 4yz transient (try again), 5yz permanent."""
    if 200 <= code < 300:
        return DeliveryStatus.SUCCESSFUL
    if 400 <= code < 500:
        return DeliveryStatus.TEMPORARY_FAILURE
    return DeliveryStatus.PERMANENT_FAILURE


def message_id_for(delivery: OutgoingMessage, from_address: str) -> str:
    """Stable per (request, endpoint), so a repeated send carries the same Message-ID."""
    domain = parseaddr(from_address)[1].rpartition("@")[2] or "herald.invalid"
    return f"{delivery.delivery_id}@{domain}"


def build_mime(content: EmailContent, to_address: str, message_id: str) -> EmailMessage | bytes:
    """The MIME message for one recipient: multipart/alternative when there is an HTML part."""
    if content.raw is not None:
        parsed = BytesParser(policy=email.policy.SMTP).parsebytes(content.raw)
        if parsed["Message-ID"] is None:
            parsed["Message-ID"] = f"<{message_id}>"
        if parsed["To"] is None:
            parsed["To"] = to_address
        if parsed["From"] is None and content.from_address:
            parsed["From"] = content.from_address
        return parsed.as_bytes()
    message = EmailMessage(policy=email.policy.SMTP)
    assert content.from_address is not None
    message["From"] = content.from_address
    message["To"] = to_address
    message["Subject"] = content.subject or ""
    message["Message-ID"] = f"<{message_id}>"
    if content.reply_to:
        message["Reply-To"] = ", ".join(content.reply_to)
    for name, value in content.headers:
        if name.lower() not in {"from", "to", "subject", "message-id", "reply-to"}:
            message[name] = value
    text = content.text if content.text is not None else ""
    if content.html is not None:
        if content.text is not None:
            message.set_content(text, charset=content.text_charset)
            message.add_alternative(content.html, subtype="html", charset=content.html_charset)
        else:
            message.set_content(content.html, subtype="html", charset=content.html_charset)
    else:
        message.set_content(text, charset=content.text_charset)
    return message


class SmtpProvider:
    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        assert settings.smtp_url is not None
        parts = urlsplit(settings.smtp_url)
        query = parse_qs(parts.query)
        self._host = parts.hostname or "localhost"
        self._implicit_tls = parts.scheme == "smtps"
        self._port = parts.port or (465 if self._implicit_tls else 25)
        # None: upgrade when the server offers STARTTLS (aiosmtplib's opportunistic mode).
        self._starttls = None if self._implicit_tls else _flag(query, "starttls")
        self._allow_plain_auth = bool(_flag(query, "allow_plain_auth"))
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._timeout = settings.provider_timeout_s
        self._tls_context = ssl.create_default_context()
        if settings.ca_bundle:
            self._tls_context.load_verify_locations(cafile=str(settings.ca_bundle))
        self._idle: asyncio.Queue[aiosmtplib.SMTP] | None = None
        self._slots: asyncio.Semaphore | None = None

    async def _connect(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            use_tls=self._implicit_tls,
            start_tls=self._starttls,
            tls_context=self._tls_context,
            timeout=self._timeout,
        )
        await client.connect()
        if self._username is not None:
            encrypted = client.get_transport_info("sslcontext") is not None
            if not encrypted and not self._allow_plain_auth:
                client.close()
                raise PlainAuthRefused("no TLS to send credentials over")
            await client.login(self._username, self._password or "")
        return client

    async def _acquire(self) -> aiosmtplib.SMTP:
        if self._idle is None or self._slots is None:
            self._idle = asyncio.Queue()
            self._slots = asyncio.Semaphore(POOL_SIZE)
        await self._slots.acquire()
        while not self._idle.empty():
            client = self._idle.get_nowait()
            if client.is_connected:
                return client
        try:
            return await self._connect()
        except BaseException:
            self._slots.release()
            raise

    def _release(self, client: aiosmtplib.SMTP, *, reusable: bool) -> None:
        assert self._idle is not None and self._slots is not None
        if reusable and client.is_connected:
            self._idle.put_nowait(client)
        else:
            client.close()
        self._slots.release()

    async def send(self, delivery: OutgoingMessage, channel: ChannelConfig) -> Outcome:
        content = delivery.content
        assert isinstance(content, EmailContent)
        try:
            check_email_address(delivery.address)
        except ValueError as exc:
            return Outcome(DeliveryStatus.PERMANENT_FAILURE, 400, f"Invalid address: {exc}")
        from_address = content.from_address or ""
        message_id = message_id_for(delivery, from_address)
        try:
            mime = build_mime(content, delivery.address, message_id)
        except (ValueError, TypeError) as exc:
            return Outcome(DeliveryStatus.PERMANENT_FAILURE, 400, f"Invalid message: {exc}")
        sender = content.feedback_forwarding_address or parseaddr(from_address)[1]
        try:
            client = await asyncio.wait_for(self._acquire(), self._timeout)
        except (TimeoutError, aiosmtplib.SMTPTimeoutError):
            return _NO_ANSWER
        except PlainAuthRefused:
            return _PLAIN_AUTH_REFUSED
        except aiosmtplib.SMTPResponseException as exc:
            return Outcome(_status_for(exc.code), exc.code, f"SMTP: {exc.message}")
        except (aiosmtplib.SMTPException, OSError) as exc:
            return _no_connection("failed", exc)
        reusable = True
        try:
            if isinstance(mime, bytes):
                _refused, response = await client.sendmail(
                    sender, [delivery.address], mime, timeout=self._timeout
                )
            else:
                _refused, response = await client.send_message(
                    mime, sender=sender, recipients=[delivery.address], timeout=self._timeout
                )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0]
            return Outcome(_status_for(refusal.code), refusal.code, f"SMTP: {refusal.message}")
        except aiosmtplib.SMTPTimeoutError:
            reusable = False
            return _NO_ANSWER
        except aiosmtplib.SMTPResponseException as exc:
            reusable = exc.code < 500 and exc.code not in (421,)
            return Outcome(_status_for(exc.code), exc.code, f"SMTP: {exc.message}")
        except (aiosmtplib.SMTPException, OSError) as exc:
            reusable = False
            return _no_connection("lost", exc)
        finally:
            self._release(client, reusable=reusable)
        code = int(response.split(" ", 1)[0]) if response[:3].isdigit() else 250
        return Outcome(_status_for(code), code, response, message_id=message_id)

    async def aclose(self) -> None:
        if self._idle is None:
            return
        while not self._idle.empty():
            client = self._idle.get_nowait()
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError):
                client.close()
