"""A real HTTP endpoint on 127.0.0.1 for webhook tests (trio sockets + h11).

Tests script its answers: :attr:`Receiver.script` is a list of behaviours taken one
per request (a status code, ``("status", {headers})``, ``"stall"`` to never answer,
``"close"`` to drop the connection, ``"flood"`` to answer 200 with a body that never
ends); once it is empty every request gets 200.
Every request that arrived is kept in :attr:`Receiver.requests`.
"""

from __future__ import annotations

from typing import Any

import attrs
import h11
import trio


@attrs.define
class Request:
    headers: dict[str, str]
    body: bytes
    arrived: float
    """trio time of arrival."""
    answered: int | str


@attrs.define
class Receiver:
    script: list[Any] = attrs.field(factory=list)
    requests: list[Request] = attrs.field(factory=list)
    port: int = 0
    changed: trio.Event = attrs.field(factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def wait_for(self, count: int) -> None:
        """Until ``count`` requests were answered 2xx."""
        while sum(1 for r in self.requests if r.answered == 200) < count:
            await self.changed.wait()

    async def wait_requests(self, count: int) -> None:
        while len(self.requests) < count:
            await self.changed.wait()

    def _arrived(self, request: Request) -> None:
        self.requests.append(request)
        self.changed.set()
        self.changed = trio.Event()

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                head: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                        continue
                    if isinstance(event, h11.Request):
                        head = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert head is not None
                headers = {k.decode().lower(): v.decode() for k, v in head.headers}
                behaviour = self.script.pop(0) if self.script else 200
                self._arrived(
                    Request(
                        headers,
                        body,
                        trio.current_time(),
                        200 if behaviour == "flood" else
                        behaviour if not isinstance(behaviour, tuple) else behaviour[0],
                    )
                )  # fmt: skip
                if behaviour == "flood":
                    await self._flood(stream, conn)
                    return
                if behaviour == "stall":
                    await trio.sleep_forever()
                if behaviour == "close":
                    return
                status, extra = (behaviour, {}) if isinstance(behaviour, int) else behaviour
                response = h11.Response(
                    status_code=status,
                    headers=[("content-length", "0"), *extra.items()],
                )
                await stream.send_all(conn.send(response) + conn.send(h11.EndOfMessage()))
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, h11.RemoteProtocolError):
            return
        finally:
            await stream.aclose()

    async def _flood(self, stream: trio.SocketStream, conn: h11.Connection) -> None:
        """200, then a chunked body sent until the client hangs up."""
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=[])))
        chunk = conn.send(h11.Data(data=b"x" * 65536))
        while True:
            await stream.send_all(chunk)
