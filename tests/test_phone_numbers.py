"""PhoneNumberValidate through boto3: libphonenumber's offline data, Pinpoint's shape."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError


def validate(client: Any, number: str, iso: str | None = None) -> dict[str, Any]:
    request = {"PhoneNumber": number, **({"IsoCountryCode": iso} if iso else {})}
    response = client.phone_number_validate(NumberValidateRequest=request)
    result: dict[str, Any] = response["NumberValidateResponse"]
    return result


def test_a_us_mobile_number(client: Any) -> None:
    answer = validate(client, "+1 212-456-1234")
    assert answer["CleansedPhoneNumberE164"] == "+12124561234"
    assert answer["CleansedPhoneNumberNational"] == "2124561234"
    assert answer["Country"] == "United States"
    assert answer["CountryCodeIso2"] == "US"
    assert answer["CountryCodeNumeric"] == "1"
    # North American numbers cannot be told mobile from landline offline: answered MOBILE.
    assert (answer["PhoneType"], answer["PhoneTypeCode"]) == ("MOBILE", 0)
    assert answer["City"] == "New York, NY"
    assert answer["Timezone"] == "America/New_York"
    assert answer["OriginalPhoneNumber"] == "+1 212-456-1234"
    assert "OriginalCountryCodeIso2" not in answer


def test_a_uk_mobile_has_its_carrier(client: Any) -> None:
    answer = validate(client, "+447400123456")
    assert (answer["PhoneType"], answer["PhoneTypeCode"]) == ("MOBILE", 0)
    assert answer["CountryCodeIso2"] == "GB" and answer["CountryCodeNumeric"] == "44"
    assert answer["Carrier"] == "Three"  # the range's operator, from the offline data
    # UK mobiles span London and the Crown Dependencies' zones: none is claimed.
    assert "Timezone" not in answer


def test_a_uk_landline(client: Any) -> None:
    answer = validate(client, "+44 20 7946 0000")
    assert (answer["PhoneType"], answer["PhoneTypeCode"]) == ("LANDLINE", 1)
    assert answer["CleansedPhoneNumberE164"] == "+442079460000"
    assert answer["CleansedPhoneNumberNational"] == "2079460000"
    assert answer["Country"] == "United Kingdom"
    assert answer["City"] == "London"
    assert answer["Timezone"] == "Europe/London"
    assert "Carrier" not in answer


def test_a_national_number_takes_the_iso_country_code(client: Any) -> None:
    answer = validate(client, "020 7946 0000", "gb")
    assert answer["CleansedPhoneNumberE164"] == "+442079460000"
    assert answer["CountryCodeIso2"] == "GB"
    assert answer["OriginalCountryCodeIso2"] == "gb"
    assert answer["OriginalPhoneNumber"] == "020 7946 0000"
    # Without the country the same digits are not a number at all.
    assert validate(client, "020 7946 0000")["PhoneType"] == "INVALID"


@pytest.mark.parametrize("number", ["+1555", "not a number", "+99912345678"])
def test_numbers_it_rejects_are_invalid(client: Any, number: str) -> None:
    answer = validate(client, number)
    assert (answer["PhoneType"], answer["PhoneTypeCode"]) == ("INVALID", 3)
    assert answer["OriginalPhoneNumber"] == number
    assert "CleansedPhoneNumberE164" not in answer


def test_bad_requests(client: Any) -> None:
    for request in ({}, {"PhoneNumber": ""}, {"PhoneNumber": "+442079460000",
                                                "IsoCountryCode": "GBR"}):
        with pytest.raises(ClientError) as caught:
            client.phone_number_validate(NumberValidateRequest=request)
        assert caught.value.response["Error"]["Code"] == "BadRequestException"
