"""Errors of the security layer (all :class:`~tidelog.errors.TidelogError`)."""

from __future__ import annotations

from tidelog.errors import TidelogError


class SecurityConfigError(TidelogError, ValueError):
    """A security setting, the password file or the ACL file is unusable; the server
    does not start."""


class AuthenticationError(TidelogError):
    """Missing or wrong credentials (HTTP 401 with ``WWW-Authenticate``)."""

    def __init__(self, message: str = "authentication required") -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": 'Basic realm="tidelog", Bearer realm="tidelog"'}


class NotAuthorizedError(TidelogError, PermissionError):
    """The ACL denies the operation (HTTP 403)."""


class TooManyAttemptsError(TidelogError):
    """Authentication is rate limited for this address or user (HTTP 429)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(max(1, round(retry_after)))}


class LimitExceededError(TidelogError):
    """A connection limit is reached (HTTP 503 with ``Retry-After``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": "1"}
