"""A real tidelog server for MQTT tests, and small blocking clients to talk to it.

The server runs in-process, in its own thread with its own trio loop, so tests
can use blocking clients (paho-mqtt, raw sockets, mosquitto_* subprocesses)
without stalling it. Everything talks to 127.0.0.1 on ports picked by the OS.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import paho.mqtt.client as paho
import trio
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.subscribeoptions import SubscribeOptions

from tidelog.server import RunningServer, ServerConfig, run_server

T = TypeVar("T")
TIMEOUT = 10.0


class ServerThread:
    """``run_server(config)`` in a background thread."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.running: RunningServer | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> ServerThread:
        ready = threading.Event()

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                self._token = trio.lowlevel.current_trio_token()
                self._scope = nursery.cancel_scope
                self.running = await nursery.start(run_server, self.config)
                ready.set()

        def thread() -> None:
            try:
                trio.run(main)
            except BaseException as exc:
                self._error = exc
            finally:
                ready.set()

        self._thread = threading.Thread(target=thread, daemon=True)
        self._thread.start()
        ready.wait(TIMEOUT)
        if self.running is None:
            raise RuntimeError(f"server did not start: {self._error!r}")
        return self

    @property
    def port(self) -> int:
        assert self.running is not None
        return self.running.ports["MQTT"]

    def ports(self, name: str) -> int:
        assert self.running is not None
        return self.running.ports[name]

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run an async function in the server's loop (e.g. a broker call)."""
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    def stop(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            return
        assert self._scope is not None
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "server did not stop"
        if self._error is not None:
            raise self._error


def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.01)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_clock_past(ms: int) -> None:
    """Wait until the wall clock is past ``ms`` (ms since the epoch), so the next event
    gets a later timestamp than ``ms``."""
    wait_for(lambda: now_ms() > ms, what=f"the clock past {ms}")


class Client:
    """A paho-mqtt client with its network loop in a thread and received messages in
    a queue. ``version`` is paho.MQTTv311 or paho.MQTTv5."""

    def __init__(
        self,
        port: int,
        client_id: str | None = None,
        *,
        version: int = paho.MQTTv311,
        clean: bool = True,
        session_expiry: int | None = None,
        transport: str = "tcp",
        ws_path: str = "/mqtt",
        will: tuple[str, bytes, int, bool] | None = None,
        will_properties: PahoProperties | None = None,
        connect_properties: PahoProperties | None = None,
        keepalive: int = 60,
        connect: bool = True,
        max_inflight: int = 20,
    ) -> None:
        self.client_id = client_id if client_id is not None else f"t-{uuid.uuid4().hex[:10]}"
        self.version = version
        kwargs: dict[str, Any] = {}
        if version != paho.MQTTv5:
            kwargs["clean_session"] = clean
        self.paho = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=version,
            transport=transport,  # type: ignore[arg-type]
            **kwargs,
        )
        if transport == "websockets":
            self.paho.ws_set_options(path=ws_path)
        self.paho.max_inflight_messages_set(max_inflight)
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connack: queue.Queue[tuple[Any, Any, Any]] = queue.Queue()
        self.disconnects: queue.Queue[Any] = queue.Queue()
        self.subacks: queue.Queue[Any] = queue.Queue()
        self.paho.on_message = lambda c, u, m: self.messages.put(m)
        self.paho.on_connect = lambda c, u, f, rc, p: self.connack.put((f, rc, p))
        self.paho.on_disconnect = lambda c, u, f, rc, p: self.disconnects.put(rc)
        self.paho.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        if will is not None:
            topic, payload, qos, retain = will
            self.paho.will_set(topic, payload, qos, retain, properties=will_properties)
        self.port = port
        self.clean = clean
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.connect_properties = connect_properties
        if connect:
            self.connect()

    def connect(self) -> tuple[Any, Any, Any]:
        kwargs: dict[str, Any] = {}
        if self.version == paho.MQTTv5:
            props = self.connect_properties or PahoProperties(paho.PacketTypes.CONNECT)
            if self.session_expiry is not None:
                props.SessionExpiryInterval = self.session_expiry
            kwargs["properties"] = props
            kwargs["clean_start"] = self.clean
        self.paho.connect("127.0.0.1", self.port, keepalive=self.keepalive, **kwargs)
        self.paho.loop_start()
        flags, rc, props = self.connack.get(timeout=TIMEOUT)
        assert not rc.is_failure, f"CONNACK {rc}"
        self.flags = flags
        self.connack_properties = props
        return flags, rc, props

    def subscribe(
        self,
        topic: str,
        qos: int = 0,
        *,
        properties: PahoProperties | None = None,
        options: SubscribeOptions | None = None,
    ) -> Any:
        if self.version == paho.MQTTv5:
            opts = options or SubscribeOptions(qos=qos)
            self.paho.subscribe(topic, options=opts, properties=properties)
        else:
            self.paho.subscribe(topic, qos)
        return tuple(getattr(code, "value", code) for code in self.subacks.get(timeout=TIMEOUT))

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        properties: PahoProperties | None = None,
    ) -> None:
        info = self.paho.publish(topic, payload, qos, retain, properties=properties)
        info.wait_for_publish(TIMEOUT)
        assert info.is_published()

    def receive(self, count: int = 1, timeout: float = TIMEOUT) -> list[paho.MQTTMessage]:
        return [self.messages.get(timeout=timeout) for _ in range(count)]

    def nothing_more(self, wait: float = 0.3) -> bool:
        try:
            message = self.messages.get(timeout=wait)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected message on {message.topic}: {message.payload!r}")

    def disconnect(self, properties: PahoProperties | None = None) -> None:
        self.paho.disconnect(properties=properties)
        self.paho.loop_stop()

    def drop(self) -> None:
        """Break the connection without DISCONNECT (as a crashing device would)."""
        sock = self.paho.socket()
        self.paho.loop_stop()
        if sock is not None:
            # paho's loop may have closed it already (the server went first): gone is gone
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@contextmanager
def clients(*made: Client) -> Iterator[tuple[Client, ...]]:
    try:
        yield made
    finally:
        for client in made:
            client.paho.disconnect()
        for client in made:
            client.paho.loop_stop()


def connection_of(server: ServerThread, client_id: str) -> Any:
    """The server's :class:`~tidelog.protocols.mqtt.connection.MQTTConnection` of a
    client, once it is connected."""
    assert server.running is not None
    mqtt = server.running.context.mqtt
    wait_for(lambda: client_id in mqtt.connections, what=f"{client_id} connected")
    return mqtt.connections[client_id]


def raw_connection(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


class RawClient:
    """A blocking MQTT client on a plain socket built on tidelog's codec, for tests that
    check exact packets (DUP flags, packet ids, reason codes)."""

    def __init__(self, port: int, level: int = 4) -> None:
        from tidelog.protocols.mqtt import Decoder, Role

        self.level = level
        self.sock = raw_connection(port)
        self.decoder = Decoder(level, role=Role.CLIENT)
        self.pending: list[Any] = []

    def send(self, *packets: Any) -> None:
        from tidelog.protocols.mqtt import encode_many

        self.sock.sendall(encode_many(packets, self.level))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self, timeout: float = TIMEOUT) -> Any:
        self.sock.settimeout(timeout)
        while not self.pending:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the server closed the connection")
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    def expect(self, kind: type[T], timeout: float = TIMEOUT) -> T:
        packet = self.receive(timeout)
        assert isinstance(packet, kind), f"expected {kind.__name__}, got {packet!r}"
        return packet

    def connect(self, client_id: str, *, clean: bool = True, **kwargs: Any) -> Any:
        from tidelog.protocols.mqtt import Connack, Connect

        self.send(Connect(client_id, self.level, clean, kwargs.pop("keep_alive", 60), **kwargs))
        return self.expect(Connack)

    def closed(self, timeout: float = TIMEOUT) -> bool:
        """True once the server has closed the connection (reads what is left)."""
        try:
            while True:
                self.receive(timeout)
        except (EOFError, ConnectionResetError):
            return True

    def close(self) -> None:
        self.sock.close()
