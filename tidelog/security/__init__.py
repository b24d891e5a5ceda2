"""Security: authentication, topic ACLs, TLS contexts and limits (docs/security.md).

Used by every listener the same way: the server's context
(:class:`tidelog.context.ServerContext`) hands it the :class:`Security` that
authenticates a client into a :class:`Principal`, and
``security.access(principal)`` the :class:`Access` that checks its topics.
"""

from tidelog.security.acl import ANONYMOUS, ANONYMOUS_USER, Access, Grant, Principal, Right
from tidelog.security.auth import Security, load_security
from tidelog.security.config import SecurityConfig, check_startup
from tidelog.security.errors import (
    AuthenticationError,
    LimitExceededError,
    NotAuthorizedError,
    SecurityConfigError,
    TooManyAttemptsError,
)
from tidelog.security.limits import (
    Limits,
    Name,
    NameTooLongError,
    Quota,
    QuotaExceededError,
    UserQuotas,
)

__all__ = [
    "ANONYMOUS",
    "ANONYMOUS_USER",
    "Access",
    "AuthenticationError",
    "Grant",
    "LimitExceededError",
    "Limits",
    "Name",
    "NameTooLongError",
    "NotAuthorizedError",
    "Principal",
    "Quota",
    "QuotaExceededError",
    "Right",
    "Security",
    "SecurityConfig",
    "SecurityConfigError",
    "TooManyAttemptsError",
    "UserQuotas",
    "check_startup",
    "load_security",
]
