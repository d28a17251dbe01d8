"""Phone numbers: PhoneNumberValidate (not per app; signed and rate-limited like every call)."""

from __future__ import annotations

from typing import Any

from api.auth import Authed
from api.routing import pinpoint_router
from worker import wire
from worker.management.phone_numbers import validate_number

router = pinpoint_router()


@router.post("/v1/phone/number/validate")
def phone_number_validate(call: Authed) -> dict[str, Any]:
    request, _ = call.parse(wire.NumberValidateRequest)
    return validate_number(request).to_wire()
