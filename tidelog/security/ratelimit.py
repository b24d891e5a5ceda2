"""Rate limits of failed authentication, and connection counting.

:class:`FailureLimiter` counts failures per key (a remote address, a user name)
in a sliding window; past ``max_failures`` further attempts with that key are
refused, without checking the credentials, until the oldest failure leaves the
window. An attempt counts as a failure while it is being checked (and is
forgiven if it succeeds), so parallel guesses cannot overshoot the limit.

:class:`ConnectionLimiter` counts open connections, in total and per address.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

MAX_KEYS = 100_000
"""Keys remembered at most (the oldest are forgotten first), so memory stays bounded."""


class FailureLimiter:
    def __init__(
        self,
        max_failures: int,
        window: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 if it may now."""
        failures = self._failures.get(key)
        if failures is None:
            return 0.0
        now = self._clock()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return 0.0
        if len(failures) < self.max_failures:
            return 0.0
        return failures[0] + self.window - now

    def failed(self, key: str) -> None:
        failures = self._failures.get(key)
        if failures is None:
            if len(self._failures) >= MAX_KEYS:
                del self._failures[next(iter(self._failures))]
            failures = self._failures[key] = deque(maxlen=self.max_failures)
        failures.append(self._clock())

    def forgive(self, key: str) -> None:
        """Undo the latest :meth:`failed` (the attempt succeeded)."""
        failures = self._failures.get(key)
        if failures:
            failures.pop()
            if not failures:
                del self._failures[key]


class ConnectionLimiter:
    """``acquire(address)`` before serving a connection, ``release`` after."""

    def __init__(self, max_total: int | None, max_per_address: int | None) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self._per_address: dict[str, int] = {}

    def acquire(self, address: str) -> str | None:
        """None if the connection may proceed (then release it), else why not."""
        if self.max_total is not None and self.total >= self.max_total:
            return f"the server holds its maximum of {self.max_total} connections"
        count = self._per_address.get(address, 0)
        if self.max_per_address is not None and count >= self.max_per_address:
            return f"{address} holds its maximum of {self.max_per_address} connections"
        self.total += 1
        self._per_address[address] = count + 1
        return None

    def release(self, address: str) -> None:
        self.total -= 1
        count = self._per_address.get(address, 0) - 1
        if count > 0:
            self._per_address[address] = count
        else:
            self._per_address.pop(address, None)
