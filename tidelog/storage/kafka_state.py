"""The state of a ``kafka://`` log (cursors, key-value namespaces) as a compacted topic.

Every cursor commit and state change is one record of the log's state topic
``<log-name>.state`` (``cleanup.policy=compact``): Kafka keeps the latest value
per key, so reading the topic from its start gives the current state. Each
node keeps the whole state in memory (it is small: sessions, cursors, retained
messages) as a :class:`StateView`, built at open and kept current by a tail
thread; a value is replaced only by a record at a higher offset, so a node's
own write (applied as soon as Kafka acknowledges it) and the same record seen
later by the tail agree, and two nodes' writes settle in log order everywhere.

Record keys: ``b"c" + cursor name`` for cursors, ``b"s" + u16 length +
namespace + key`` for state (all UTF-8). Values start with a format byte
(``1``) so that an empty value is never confused with a tombstone (a record
with no value, which deletes the key and is what compaction eventually drops);
a cursor's value then holds its position (unsigned 64-bit big-endian) and its
metadata as JSON. No I/O here.
"""

from __future__ import annotations

import struct

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
VALUE_FORMAT = b"\x01"
CURSOR = b"c"
STATE = b"s"


def cursor_key(name: str) -> bytes:
    return CURSOR + name.encode("utf-8")


def state_key(namespace: str, key: str) -> bytes:
    raw = namespace.encode("utf-8")
    return STATE + _U16.pack(len(raw)) + raw + key.encode("utf-8")


def cursor_value(position: int, metadata: bytes) -> bytes:
    return VALUE_FORMAT + _U64.pack(position) + metadata


def state_value(value: bytes) -> bytes:
    return VALUE_FORMAT + value


class StateView:
    """The latest value of every key of the state topic, with the offset that set it."""

    def __init__(self) -> None:
        self.cursors: dict[str, tuple[int, bytes]] = {}
        """Cursor name: (position, metadata JSON)."""
        self.namespaces: dict[str, dict[str, bytes]] = {}
        self._offsets: dict[bytes, int] = {}
        self.next_offset = 0
        """Every state record below this offset has been applied."""

    def apply(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Apply the record at ``offset`` unless a later one already set ``key``."""
        self.next_offset = max(self.next_offset, offset + 1)
        if not key or self._offsets.get(key, -1) >= offset:
            return
        self._offsets[key] = offset
        if value is not None and not value.startswith(VALUE_FORMAT):
            return  # a record tidelog did not write: ignored
        kind = key[:1]
        if kind == CURSOR:
            name = key[1:].decode("utf-8", "replace")
            if value is None:
                self.cursors.pop(name, None)
            else:
                (position,) = _U64.unpack_from(value, 1)
                self.cursors[name] = (position, value[9:])
        elif kind == STATE and len(key) >= 3:
            (length,) = _U16.unpack_from(key, 1)
            namespace = key[3 : 3 + length].decode("utf-8", "replace")
            name = key[3 + length :].decode("utf-8", "replace")
            space = self.namespaces.setdefault(namespace, {})
            if value is None:
                space.pop(name, None)
            else:
                space[name] = value[1:]
