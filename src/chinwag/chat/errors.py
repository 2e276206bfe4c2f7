"""Domain errors. The web layer maps each to an HTTP status and the contract's error shape."""

from __future__ import annotations


class ChinwagError(Exception):
    """Base of every error a client can cause; ``code`` is stable, ``message`` is for people."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(ChinwagError):
    code = "invalid_input"
    status = 422


class Unauthorized(ChinwagError):
    code = "unauthorized"
    status = 401


class Forbidden(ChinwagError):
    code = "forbidden"
    status = 403


class NotFound(ChinwagError):
    code = "not_found"
    status = 404


class Conflict(ChinwagError):
    code = "conflict"
    status = 409


class RateLimited(ChinwagError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(RateLimited):
    """This process is at its bound for costly work (password hashing): come back shortly."""

    code = "overloaded"
    status = 503
