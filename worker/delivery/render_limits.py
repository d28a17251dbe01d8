"""How much one request may ask the renderer for (issue 14).

Rendering multiplies: one 5 MB body of ``{{A}}`` and a 1 MB value for ``A`` ask for 10¹²
characters. So every rendered message draws on a :class:`RenderBudget` — a cap on its size,
charged *before* the text is built, and a cap on how many variables it may insert — and
intake bounds the substitutions a request may carry. The budget knows nothing about the
syntax it is charged from, so a template engine that replaces the ``{{Name}}`` substitution
charges the same budget.

The per-message cap sits above every provider's own limit (APNs 4 KB, VoIP 5 KB, FCM 4 KB,
ADM 6 KB; SES-style e-mail 10 MB with its attachments) and far below a worker's memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from worker import wire
from worker.core.errors import BadRequest

MIB = 1024 * 1024
# Characters one rendered message may hold, over all its parts (subject, text, HTML, title...).
MAX_RENDERED_CHARS = 10 * MIB
# Variables one rendered message may insert: a template with this many placeholders is a
# generator, not a message, and each one costs a lookup.
MAX_VARIABLE_REFERENCES = 10_000
# What one batch may hold rendered before it sends: a batch of 100 large e-mails would
# otherwise hold 100 × 10 MiB in one worker process. Rows past it wait for a batch of their
# own (the first message of a batch always fits, so every batch progresses).
MAX_BATCH_RENDERED_CHARS = 64 * MIB
# Intake: the substitutions of one request, over every map it carries (the message's,
# each channel message's and each user's, endpoint's or address's).
MAX_SUBSTITUTION_KEYS = 10_000
MAX_SUBSTITUTION_CHARS = 2 * MIB


class RenderLimitExceeded(ValueError):
    """Rendering this message would take more than its budget (a permanent failure)."""


@dataclass
class RenderBudget:
    """What one message has used of its rendering budget so far."""

    max_chars: int = MAX_RENDERED_CHARS
    max_references: int = MAX_VARIABLE_REFERENCES
    chars: int = 0
    references: int = 0

    def charge_chars(self, count: int) -> None:
        """Call before building ``count`` more characters of output."""
        self.chars += count
        if self.chars > self.max_chars:
            raise RenderLimitExceeded(
                f"The rendered message would exceed {self.max_chars:,} characters, "
                "Herald's limit per message"
            )

    def charge_reference(self) -> None:
        self.references += 1
        if self.references > self.max_references:
            raise RenderLimitExceeded(
                f"The message inserts more than {self.max_references:,} variables, "
                "Herald's limit per message"
            )


def _substitution_maps(
    config: wire.DirectMessageConfiguration,
    recipients: Iterable[wire.EndpointSendConfiguration],
) -> Iterable[Mapping[str, list[str]]]:
    messages = (
        config.default_message, config.default_push_notification_message, config.apns_message,
        config.gcm_message, config.adm_message, config.baidu_message, config.email_message,
        config.sms_message, config.voice_message, *recipients,
    )
    for message in messages:
        if message is not None and message.substitutions:
            yield message.substitutions


def check_substitutions(
    config: wire.DirectMessageConfiguration,
    recipients: Iterable[wire.EndpointSendConfiguration],
) -> None:
    """Refuse (400) a request whose substitutions exceed the intake limits."""
    keys = chars = 0
    for substitutions in _substitution_maps(config, recipients):
        keys += len(substitutions)
        chars += sum(len(k) + sum(len(v) for v in values) for k, values in substitutions.items())
    if keys > MAX_SUBSTITUTION_KEYS:
        raise BadRequest(
            f"The request's Substitutions hold {keys:,} keys; at most "
            f"{MAX_SUBSTITUTION_KEYS:,} are allowed per request"
        )
    if chars > MAX_SUBSTITUTION_CHARS:
        raise BadRequest(
            f"The request's Substitutions hold {chars:,} characters of keys and values; at "
            f"most {MAX_SUBSTITUTION_CHARS:,} are allowed per request"
        )
