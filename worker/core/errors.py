"""Errors that become Pinpoint-shaped answers (DESIGN.md §3).

    PinpointError
    ├── BadRequest            400 BadRequestException
    ├── Forbidden             403 ForbiddenException
    ├── NotFound              404 NotFoundException
    ├── MethodNotAllowed      405 MethodNotAllowedException
    ├── PayloadTooLarge       413 PayloadTooLargeException
    ├── TooManyRequests       429 TooManyRequestsException
    └── InternalServerError   500 InternalServerErrorException
"""

from __future__ import annotations


class PinpointError(Exception):
    status_code = 500
    error_type = "InternalServerErrorException"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(PinpointError):
    status_code = 400
    error_type = "BadRequestException"


class Forbidden(PinpointError):
    status_code = 403
    error_type = "ForbiddenException"


class NotFound(PinpointError):
    status_code = 404
    error_type = "NotFoundException"


class MethodNotAllowed(PinpointError):
    status_code = 405
    error_type = "MethodNotAllowedException"


class PayloadTooLarge(PinpointError):
    status_code = 413
    error_type = "PayloadTooLargeException"


class TooManyRequests(PinpointError):
    status_code = 429
    error_type = "TooManyRequestsException"


class InternalServerError(PinpointError):
    status_code = 500
    error_type = "InternalServerErrorException"
