"""Data representations of MQTT (§1.5): integers, Variable Byte Integers, UTF-8
strings, binary data, string pairs -- encoding, and a bounded reader for decoding.

Every decoding failure is a Malformed Packet (0x81): a field that runs past the
end of its packet, a Variable Byte Integer longer than 4 bytes or not in its
shortest form (§1.5.5), ill-formed UTF-8 or U+0000 in a string (§1.5.4).
"""

from __future__ import annotations

import struct
from typing import Final

from tidelog.protocols.mqtt.errors import MQTTProtocolError, malformed
from tidelog.protocols.mqtt.protocol import MAX_STRING_BYTES, MAX_VARIABLE_BYTE_INTEGER

U16: Final = struct.Struct(">H")
U32: Final = struct.Struct(">I")

# Single-byte Variable Byte Integers, precomputed: almost every remaining length
# of a small packet and every property length of a small property block.
_SHORT_VARINTS: Final = tuple(bytes((i,)) for i in range(128))


def encode_varint(value: int) -> bytes:
    """Encode a Variable Byte Integer (§1.5.5) in its shortest form."""
    if value < 128:
        if value < 0:
            raise MQTTProtocolError(f"variable byte integer {value} is negative")
        return _SHORT_VARINTS[value]
    if value > MAX_VARIABLE_BYTE_INTEGER:
        raise MQTTProtocolError(
            f"variable byte integer {value} is larger than {MAX_VARIABLE_BYTE_INTEGER}"
        )
    out = bytearray()
    while True:
        digit = value & 0x7F
        value >>= 7
        if value:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def encode_utf8(text: str) -> bytes:
    """Encode a UTF-8 Encoded String (§1.5.4): two-byte length, then the bytes."""
    if "\x00" in text:
        raise malformed("UTF-8 string must not contain U+0000")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise malformed(f"string is not valid UTF-8: {exc.reason}") from None
    if len(raw) > MAX_STRING_BYTES:
        raise malformed(f"UTF-8 string is {len(raw)} bytes long; the limit is {MAX_STRING_BYTES}")
    return U16.pack(len(raw)) + raw


def encode_binary(data: bytes) -> bytes:
    """Encode Binary Data (§1.5.6): two-byte length, then the bytes."""
    if len(data) > MAX_STRING_BYTES:
        raise malformed(f"binary data is {len(data)} bytes long; the limit is {MAX_STRING_BYTES}")
    return U16.pack(len(data)) + bytes(data)


def decode_utf8(raw: bytes | memoryview) -> str:
    """Decode the bytes of a UTF-8 Encoded String; ill-formed UTF-8 or U+0000 is malformed."""
    try:
        text = str(raw, "utf-8")
    except UnicodeDecodeError as exc:
        raise malformed(f"string is not well-formed UTF-8: {exc.reason}") from None
    if "\x00" in text:
        raise malformed("UTF-8 string contains U+0000")
    return text


class Reader:
    """Reads fields of one packet from ``buf[pos:end]``; never reads past ``end``.

    ``buf`` may hold further packets after ``end``, so bounds are checked
    against ``end`` explicitly rather than left to ``IndexError``.
    """

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int, end: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end

    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, count: int, what: str) -> int:
        pos = self.pos
        if pos + count > self.end:
            raise malformed(f"packet ends inside {what}")
        self.pos = pos + count
        return pos

    def u8(self, what: str = "a byte") -> int:
        return self.buf[self._need(1, what)]

    def u16(self, what: str = "a two byte integer") -> int:
        pos = self._need(2, what)
        buf = self.buf
        return (buf[pos] << 8) | buf[pos + 1]

    def u32(self, what: str = "a four byte integer") -> int:
        value: int = U32.unpack_from(self.buf, self._need(4, what))[0]
        return value

    def varint(self, what: str = "a variable byte integer") -> int:
        value, self.pos = read_varint(self.buf, self.pos, self.end, what)
        return value

    def take(self, count: int, what: str) -> bytes:
        pos = self._need(count, what)
        return self.buf[pos : pos + count]

    def utf8(self, what: str = "a UTF-8 string") -> str:
        length = self.u16(what)
        pos = self._need(length, what)
        return decode_utf8(memoryview(self.buf)[pos : pos + length])

    def binary(self, what: str = "binary data") -> bytes:
        length = self.u16(what)
        pos = self._need(length, what)
        return self.buf[pos : pos + length]

    def rest(self) -> bytes:
        pos = self.pos
        self.pos = self.end
        return self.buf[pos : self.end]

    def expect_end(self, what: str) -> None:
        if self.pos != self.end:
            raise malformed(f"{self.end - self.pos} unexpected bytes after {what}")


def read_varint(buf: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """Read a Variable Byte Integer from ``buf[pos:end]``; return ``(value, new_pos)``.

    At most 4 bytes, shortest form only (§1.5.5 [MQTT-1.5.5-1]).
    """
    value = 0
    shift = 0
    for count in range(4):
        if pos >= end:
            raise malformed(f"packet ends inside {what}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and count:
                raise malformed(f"{what} is not in its shortest form")
            return value, pos
        shift += 7
    raise malformed(f"{what} is longer than 4 bytes")


def rest_of_packet(data: bytes, sent: int, keep: int = 0) -> bytes:
    """The bytes of ``data`` (whole MQTT packets, back to back) from ``sent`` to the
    end of the packet ``sent`` falls in, or to ``keep`` if that is further; ``b""``
    at a packet boundary at or past ``keep``.

    For a writer cut after sending ``data[:sent]``: what it must still send before
    another packet can follow. ``keep`` (a packet boundary) ends a section that must
    go out whole even when the cut falls before it (the acknowledgements placed
    before the PUBLISHes: a client that sent a PUBLISH waits for its PUBACK). Walks
    the fixed headers (first byte, Remaining Length) from the start.
    """
    position = 0
    while position < sent:
        length, body = read_varint(data, position + 1, len(data), "remaining length")
        position = body + length
    return data[sent : max(position, keep)]
