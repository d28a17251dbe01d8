"""What an address looks like on each kind of channel: e-mail syntax, phone numbers.

Intake checks addresses with these, management checks channel senders, delivery keys
duplicates and providers check what they are given; so they live below all of them.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"^[^@\s<>\"(),;:\\\[\]]+@[^@\s<>\"(),;:\\\[\]]+\.[^@\s<>\"(),;:\\\[\]]+$")
E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # ASCII digits only: \d admits other scripts


def check_email_address(address: str) -> str:
    if "\r" in address or "\n" in address:
        raise ValueError("must not contain line breaks")
    if len(address) > 254 or not _EMAIL.fullmatch(address):
        raise ValueError(f"'{address[:80]}' is not an e-mail address")
    return address


def normalize_phone(address: str) -> str:
    """E.164 form of a phone number written with spaces, dashes, dots or parentheses."""
    compact = re.sub(r"[\s\-.()]", "", address)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    return compact


def is_e164(address: str) -> bool:
    return E164.fullmatch(address) is not None
