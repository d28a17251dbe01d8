"""Apple Push Notification service: the HTTP/2 provider API, through aioapns.

Channel types and where they go::

    APNS               HERALD_APNS_URL           topic <BundleId>
    APNS_SANDBOX       HERALD_APNS_SANDBOX_URL   topic <BundleId>
    APNS_VOIP          HERALD_APNS_URL           topic <BundleId>.voip, apns-push-type voip
    APNS_VOIP_SANDBOX  HERALD_APNS_SANDBOX_URL   topic <BundleId>.voip, apns-push-type voip

Pieces, in the order a send goes through them:

- :func:`build_apns_payload` — the pure payload builder (Pinpoint's ``aps`` + ``data.pinpoint``);
- :func:`prepare_request` — pure: token, headers and body, or the refusal that keeps a bad
  request off the network (payload too large, collapse id too long, malformed token, ...);
- :class:`ApnsProvider` — picks token or certificate auth, keeps one connection pool per
  (channel configuration, auth, URL) on the running event loop, bounds each send by
  ``HERALD_PROVIDER_TIMEOUT_S``;
- :data:`APNS_OUTCOMES` — the one table from Apple's answers to :class:`DeliveryStatus`.

Modules: ``payload`` (pure payload and request), ``outcomes`` (the table), ``credentials``
(token or certificate), ``connection`` (HTTP/2 protocol), ``pool`` (connections), ``provider``.

aioapns 4.0 is used for its connection pool, stream accounting and HTTP/2 set-up, with its
client protocol subclassed because of traps measured here (DESIGN.md §7):

- it never returns HTTP/2 flow-control credit for response bodies, so a connection stalls for
  good once ~64 KiB of error bodies have arrived: :meth:`connection.ApnsProtocol.data_received`
  acknowledges every DATA frame;
- it matches responses to requests by the ``apns-id`` the server echoes and drops every header
  but that one: here responses are matched by HTTP/2 stream and keep their headers
  (``Retry-After``);
- it has no timeout: every send runs under :func:`asyncio.timeout`, and a send given up on
  resets its stream and frees its slot;
- it reads the host and port from class attributes (``APNS_SERVER``, ``APNS_PORT``):
  :func:`connection.protocol_for` makes a subclass per configured URL;
- certificate auth wants a file path (``ssl.SSLContext.load_cert_chain`` has no in-memory
  form): the PEM text is written to a private (0600) temporary file only for the moment
  ``load_cert_chain`` reads it (:func:`credentials.tls_context`).

When APNs never answered there is no HTTP status; as every adapter does
(:mod:`worker.providers.base`), Herald reports 503 when the connection failed or was lost and
504 when no answer came in time.
"""

from worker.providers.apns.outcomes import APNS_OUTCOMES, classify, outcome_for
from worker.providers.apns.payload import (
    PAYLOAD_LIMIT,
    VOIP_PAYLOAD_LIMIT,
    ApnsRequest,
    Refused,
    build_apns_payload,
    prepare_request,
)
from worker.providers.apns.provider import ApnsProvider

__all__ = [
    "APNS_OUTCOMES",
    "PAYLOAD_LIMIT",
    "VOIP_PAYLOAD_LIMIT",
    "ApnsProvider",
    "ApnsRequest",
    "Refused",
    "build_apns_payload",
    "classify",
    "outcome_for",
    "prepare_request",
]
