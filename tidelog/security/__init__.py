"""Security: authentication, topic ACLs, TLS contexts and limits (docs/security.md).

Used by every listener the same way: the server's context
(:class:`tidelog.context.ServerContext`) hands it the :class:`Security` that
authenticates a client into a :class:`Principal`, and
``security.access(principal)`` the :class:`Access` that checks its topics.
"""

from tidelog.security.acl import ANONYMOUS, Access, Grant, Principal, Right
from tidelog.security.auth import Security, load_security
from tidelog.security.config import SecurityConfig, check_startup
from tidelog.security.errors import (
    AuthenticationError,
    LimitExceededError,
    NotAuthorizedError,
    SecurityConfigError,
    TooManyAttemptsError,
)

__all__ = [
    "ANONYMOUS",
    "Access",
    "AuthenticationError",
    "Grant",
    "LimitExceededError",
    "NotAuthorizedError",
    "Principal",
    "Right",
    "Security",
    "SecurityConfig",
    "SecurityConfigError",
    "TooManyAttemptsError",
    "check_startup",
    "load_security",
]
