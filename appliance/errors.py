"""Errors that carry their HTTP status; one handler renders them all."""

from __future__ import annotations


class ApplianceError(Exception):
    """Base class: an expected failure with a status and a message for the client."""

    status = 500
    code = "INTERNAL_ERROR"

    def __init__(self, message: str = "Internal server error") -> None:
        super().__init__(message)
        self.message = message


class Invalid(ApplianceError):
    """The request is malformed or fails validation."""

    status = 400
    code = "VALIDATION_ERROR"


class Unauthorized(ApplianceError):
    """No credentials, or credentials that do not match a key."""

    status = 401
    code = "UNAUTHORIZED"


class Forbidden(ApplianceError):
    """The caller is known but may not do this."""

    status = 403
    code = "FORBIDDEN"


class NotFound(ApplianceError):
    """The resource does not exist or is invisible to the caller."""

    status = 404
    code = "NOT_FOUND"


class Conflict(ApplianceError):
    """The resource already exists or is in a state that forbids the action."""

    status = 409
    code = "CONFLICT"


class TooLarge(ApplianceError):
    """The body or file is bigger than allowed."""

    status = 413
    code = "PAYLOAD_TOO_LARGE"


class Unavailable(ApplianceError):
    """The appliance cannot serve this now, or at all while offline."""

    status = 503
    code = "SERVICE_UNAVAILABLE"


class Unprocessable(ApplianceError):
    """The request is well formed but cannot be carried out on this data."""

    status = 422
    code = "UNPROCESSABLE"
