"""A raw MQTT client over trio sockets and tidelog's sans-IO codec, for load
generators, test harnesses and benchmarks that drive any broker on the wire.

:class:`ClientConnection` connects (CONNECT/CONNACK), subscribes, sends encoded
packets and decodes what the broker sends, raising :class:`LoadError` for
anything a well-behaved broker would not do (refusal, DISCONNECT, a bad packet,
a closed connection). :func:`encoded_ack` caches the encoded acknowledgements a
client sends for each packet identifier.
"""

from __future__ import annotations

import contextlib
from typing import TypeVar

import attrs
import trio

from tidelog.protocols.mqtt import (
    NO_PROPERTIES,
    Connack,
    Connect,
    Decoder,
    Disconnect,
    MQTTProtocolError,
    Packet,
    PacketType,
    Properties,
    Puback,
    Pubcomp,
    Pubrec,
    Pubrel,
    Role,
    Suback,
    Subscribe,
    Subscription,
    encode,
    reason_code_name,
)

READ_SIZE = 262_144
"""Bytes asked of the socket per read."""
MAX_PACKET_ID = 65_535
_P = TypeVar("_P", bound=Packet)


class LoadError(Exception):
    """The broker refused, closed the connection or broke the protocol."""


@attrs.frozen
class Target:
    """Where the broker listens; ``pid`` (when known) is used for CPU accounting."""

    host: str
    port: int
    pid: int | None = None


def ack_table(cls: type[Puback | Pubrec | Pubrel | Pubcomp], level: int) -> dict[int, bytes]:
    """Encoded acks by packet identifier, filled as identifiers are used."""
    return _ACK_TABLES.setdefault((cls.packet_type, level), {})


_ACK_TABLES: dict[tuple[PacketType, int], dict[int, bytes]] = {}


def encoded_ack(cls: type[Puback | Pubrec | Pubrel | Pubcomp], packet_id: int, level: int) -> bytes:
    """The encoded ``cls`` acknowledgement of ``packet_id`` (cached)."""
    table = ack_table(cls, level)
    data = table.get(packet_id)
    if data is None:
        data = table[packet_id] = encode(cls(packet_id), level)
    return data


class ClientConnection:
    """One MQTT client connection: a trio stream and a
    client-side decoder (the broker's side of a connection is ``MQTTConnection``).

    Sends are serialized by a lock, so a reader task may answer (PUBREL) while
    the writer task is between sends.
    """

    def __init__(self, stream: trio.SocketStream, level: int, client_id: str) -> None:
        self.stream = stream
        self.level = level
        self.client_id = client_id
        self.decoder = Decoder(level, role=Role.CLIENT)
        self.receive_maximum = MAX_PACKET_ID
        """How many QoS 1/2 PUBLISHes the broker accepts in flight (v5 CONNACK)."""
        self.session_present = False
        self._send_lock = trio.Lock()
        self._backlog: list[Packet] = []

    @classmethod
    async def open(
        cls,
        target: Target,
        client_id: str,
        level: int,
        *,
        clean_start: bool = True,
        properties: Properties = NO_PROPERTIES,
    ) -> ClientConnection:
        """Connect (by default with a clean session) and no keep alive; raise LoadError if
        refused. ``session_present`` tells whether the broker resumed a session."""
        stream = await trio.open_tcp_stream(target.host, target.port)
        connection = cls(stream, level, client_id)
        try:
            connect = Connect(
                client_id, protocol_level=level, clean_start=clean_start, properties=properties
            )
            await connection.send(encode(connect, level))
            connack = await connection.expect(Connack)
            connection.session_present = connack.session_present
            if connack.reason_code >= 0x80:
                name = reason_code_name(connack.reason_code, PacketType.CONNACK)
                raise LoadError(f"{client_id}: CONNACK refused: {name}")
            if connack.properties.receive_maximum:
                connection.receive_maximum = connack.properties.receive_maximum
        except BaseException:
            await stream.aclose()
            raise
        return connection

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        async with self._send_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise LoadError(f"{self.client_id}: the broker closed the connection") from exc

    async def receive_packets(self, max_bytes: int = READ_SIZE) -> list[Packet]:
        """The next packets the broker sent (at least one), reading at most
        ``max_bytes`` per socket read."""
        if self._backlog:
            packets, self._backlog = self._backlog, []
            return packets
        while True:
            try:
                data = await self.stream.receive_some(max_bytes)
            except trio.BrokenResourceError as exc:
                raise LoadError(f"{self.client_id}: connection reset by the broker") from exc
            if not data:
                raise LoadError(f"{self.client_id}: the broker closed the connection")
            try:
                packets = self.decoder.feed(data)
            except MQTTProtocolError as exc:
                raise LoadError(f"{self.client_id}: the broker sent a bad packet: {exc}") from exc
            if packets:
                return packets

    async def expect(self, cls: type[_P]) -> _P:
        """The next packet, which must be a ``cls``; later packets stay queued."""
        packets = await self.receive_packets()
        first, self._backlog = packets[0], packets[1:]
        if isinstance(first, Disconnect):
            raise LoadError(f"{self.client_id}: broker sent DISCONNECT {disconnect_reason(first)}")
        if not isinstance(first, cls):
            raise LoadError(
                f"{self.client_id}: expected {cls.__name__}, got {type(first).__name__}"
            )
        return first

    async def subscribe(self, topic_filter: str, qos: int) -> int:
        """Subscribe and return the granted QoS; raise LoadError if refused."""
        await self.send(encode(Subscribe(1, [Subscription(topic_filter, qos)]), self.level))
        suback = await self.expect(Suback)
        granted = suback.reason_codes[0]
        if granted >= 0x80:
            name = reason_code_name(granted, PacketType.SUBACK)
            raise LoadError(f"{self.client_id}: SUBSCRIBE {topic_filter!r} refused: {name}")
        return int(granted)

    async def close(self) -> None:
        """Send DISCONNECT if the connection still works, then close it."""
        with trio.move_on_after(1):
            # a connection the broker already closed needs no goodbye
            with contextlib.suppress(LoadError):
                await self.send(encode(Disconnect(), self.level))
        await self.stream.aclose()


def disconnect_reason(packet: Disconnect) -> str:
    code = packet.reason_code
    return f"0x{code:02X} {reason_code_name(code, PacketType.DISCONNECT)}"


# -- publishing ----------------------------------------------------------------
