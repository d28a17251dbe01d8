"""PhoneNumberValidate: what libphonenumber's offline data says about a number.

Pinpoint asked a carrier database; Herald answers from the metadata shipped with the
``phonenumbers`` package (Google's libphonenumber), so it needs no network and no account.
"""

from __future__ import annotations

from phonenumbers import (
    NumberParseException,
    PhoneNumber,
    PhoneNumberFormat,
    PhoneNumberType,
    carrier,
    format_number,
    geocoder,
    is_valid_number,
    national_significant_number,
    number_type,
    parse,
    region_code_for_number,
    timezone,
)

from worker import wire
from worker.core.errors import BadRequest

MAX_PHONE_NUMBER = 64

# PhoneType and its PhoneTypeCode, as Pinpoint's NumberValidateResponse documents them.
PHONE_TYPE_CODES = {
    "MOBILE": 0, "LANDLINE": 1, "VOIP": 2, "INVALID": 3, "OTHER": 4, "PREPAID": 5,
}

# libphonenumber cannot tell a mobile from a landline in the North American plan (and a few
# others): it says FIXED_LINE_OR_MOBILE. Those ranges are mostly mobile today and SMS-capable,
# which is what a caller of this operation wants to know, so they answer MOBILE. PREPAID needs
# a live carrier lookup that the offline data does not have.
_PHONE_TYPES = {
    PhoneNumberType.MOBILE: "MOBILE",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "MOBILE",
    PhoneNumberType.FIXED_LINE: "LANDLINE",
    PhoneNumberType.VOIP: "VOIP",
}
_UNKNOWN_TIMEZONE = "Etc/Unknown"


def _phone_type(number: PhoneNumber) -> str:
    return _PHONE_TYPES.get(number_type(number), "OTHER")


def _invalid(original: str, iso: str | None) -> wire.NumberValidateResponse:
    return wire.NumberValidateResponse(
        original_phone_number=original, original_country_code_iso2=iso,
        phone_type="INVALID", phone_type_code=PHONE_TYPE_CODES["INVALID"],
    )


def validate_number(request: wire.NumberValidateRequest) -> wire.NumberValidateResponse:
    """Every member of ``NumberValidateResponse`` the offline data can fill; a number it
    rejects is ``INVALID`` (code 3) with what could still be read from it."""
    original = request.phone_number
    if not original or not original.strip():
        raise BadRequest("PhoneNumber is required")
    if len(original) > MAX_PHONE_NUMBER:
        raise BadRequest(f"PhoneNumber must be at most {MAX_PHONE_NUMBER} characters")
    iso = request.iso_country_code
    if iso is not None and (len(iso) != 2 or not iso.isascii() or not iso.isalpha()):
        raise BadRequest("IsoCountryCode must be a two-letter ISO 3166-1 alpha-2 code")
    region = iso.upper() if iso else None
    try:
        number = parse(original, region)
    except NumberParseException:
        return _invalid(original, iso)
    region_code = region_code_for_number(number)
    if not is_valid_number(number) or region_code is None:
        return _invalid(original, iso)
    phone_type = _phone_type(number)
    country = geocoder.country_name_for_number(number, "en") or None
    # The geocoder names the most precise place it knows: a city ("Seattle, WA"), else a
    # region or the country itself, which is not a city.
    place = geocoder.description_for_valid_number(number, "en") or None
    zones = [z for z in timezone.time_zones_for_number(number) if z != _UNKNOWN_TIMEZONE]
    return wire.NumberValidateResponse(
        carrier=carrier.name_for_valid_number(number, "en") or None,
        city=place if place != country else None,
        cleansed_phone_number_e164=format_number(number, PhoneNumberFormat.E164),
        cleansed_phone_number_national=national_significant_number(number),
        country=country,
        country_code_iso2=region_code,
        country_code_numeric=str(number.country_code),
        original_country_code_iso2=iso,
        original_phone_number=original,
        phone_type=phone_type,
        phone_type_code=PHONE_TYPE_CODES[phone_type],
        timezone=zones[0] if len(zones) == 1 else None,
    )
