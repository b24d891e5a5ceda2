"""The webhooks' outbound HTTP: one ``httpcore`` connection pool for every webhook.

Why httpcore and not httpx's client on top of it: a webhook request needs none
of what the client layer adds (cookies, redirects, auth flows, URL merging), and
that layer cost about half of the CPU of each request (one-event webhooks
measured 2.5 ms a request through ``httpx.AsyncClient``). httpcore is httpx's own
transport, well kept, and runs under trio. Redirects are not followed (a 3xx is
a client error of the endpoint, as before).

Timeouts: ``timeout`` bounds the whole request (connect, send, answer), not only
each read, so an endpoint that dribbles its answer cannot hold a sender longer.
"""

from __future__ import annotations

from types import TracebackType

import httpcore
import trio

MAX_CONNECTIONS = 256
MAX_KEEPALIVE = 64
MAX_ANSWER_BYTES = 64 * 1024
"""The most of an answer's body read: a longer one closes the connection (an endpoint
streaming a huge answer must not fill the memory; only the status matters)."""


class PostTimeout(Exception):
    """The request did not complete within its timeout."""


class PostError(Exception):
    """The connection failed (refused, reset, closed mid-answer, not HTTP)."""


async def _drain(response: httpcore.Response) -> None:
    """Read the answer's body chunk by chunk (nothing kept), up to
    :data:`MAX_ANSWER_BYTES`; past that, leaving ``stream()`` closes the connection
    instead of returning it to the pool."""
    seen = 0
    async for chunk in response.aiter_stream():
        seen += len(chunk)
        if seen > MAX_ANSWER_BYTES:
            return


class Poster:
    """POSTs bodies; use as an async context manager (it closes the pool)."""

    def __init__(self) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_KEEPALIVE
        )
        self.is_closed = False

    async def __aenter__(self) -> Poster:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every pooled connection."""
        self.is_closed = True
        await self._pool.aclose()

    async def post(
        self, url: str, headers: list[tuple[bytes, bytes]], body: bytes, timeout: float
    ) -> tuple[int, str | None]:
        """POST ``body``; returns the status code and the ``Retry-After`` header (at
        most :data:`MAX_ANSWER_BYTES` of the answer's body are read and dropped).
        Raises :class:`PostTimeout` or :class:`PostError`."""
        limits = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        try:
            with trio.fail_after(timeout):
                async with self._pool.stream(
                    "POST", url, headers=headers, content=body, extensions={"timeout": limits}
                ) as response:
                    await _drain(response)
        except (trio.TooSlowError, httpcore.TimeoutException):
            raise PostTimeout(f"timeout after {timeout}s") from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
            raise PostError(f"connection error: {type(exc).__name__}: {exc}") from None
        retry_after = None
        for name, value in response.headers:
            if name.lower() == b"retry-after":
                retry_after = value.decode("latin-1")
        return response.status, retry_after
