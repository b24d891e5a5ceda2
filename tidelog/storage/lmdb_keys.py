"""LMDB keys for names that clients choose, whatever their length.

LMDB refuses keys over 511 bytes (its compile-time default), but the names
tidelog stores under keys come from clients: MQTT topics and client ids may be
up to 65,535 bytes of UTF-8. A name that does not fit is stored under a fixed
size stand-in key instead, and the name itself goes into the value, so nothing
a client may send can make a write (or a segment seal, or a restart) fail.

Two layouts, one per kind of database:

Topic-keyed databases (a segment's ``topics`` and ``counts``, the meta
``topics`` dictionary)
    A topic that fits is its own key. A longer one is stored under
    :data:`LONG_TOPIC_MARK` (a zero byte, which no topic contains, so the two
    forms never meet) followed by the SHA-256 of the topic; a value that is
    enumerated (``counts``, the dictionary) then carries the topic after its
    8-byte count. Long keys sort before every topic, so a prefix scan for a
    wildcard filter reads them separately (:func:`iter_long_topics`).

Key-value state (``namespace \\0 key``)
    A key that fits keeps that form. A longer one becomes ``namespace \\1`` and
    the SHA-256 of the key, and its value is prefixed by the key's length and
    the key (:func:`pack_named` / :func:`unpack_named`). Namespaces contain
    neither byte, so a namespace's two ranges never run into another's.

SHA-256 collisions are not a practical concern; a stand-in key whose stored
name differs from the one looked up is still treated as absent.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator

import lmdb

MAX_KEY_BYTES = 511
"""LMDB's default maximum key size (``mdb_env_get_maxkeysize``)."""
LONG_TOPIC_MARK = b"\x00"
STATE_SHORT = b"\x00"
STATE_LONG = b"\x01"
_NAME_LENGTH = struct.Struct(">I")
_COUNT = struct.Struct(">Q")


def topic_key(topic: bytes) -> bytes:
    """The key a topic is stored under (itself, or the long-topic stand-in)."""
    if len(topic) <= MAX_KEY_BYTES:
        return topic
    return LONG_TOPIC_MARK + hashlib.sha256(topic).digest()


def is_long_topic_key(key: bytes) -> bool:
    return key[:1] == LONG_TOPIC_MARK


def pack_count(topic: bytes, count: int) -> bytes:
    """A ``counts``/dictionary value: the count, then the topic when its key is a stand-in."""
    packed = _COUNT.pack(count)
    return packed + topic if len(topic) > MAX_KEY_BYTES else packed


def unpack_count(key: bytes, value: bytes) -> tuple[bytes, int]:
    """The topic and count of a ``counts``/dictionary entry; ``ValueError`` if malformed."""
    if len(value) < _COUNT.size or (len(value) > _COUNT.size) != is_long_topic_key(key):
        raise ValueError(f"malformed topic count entry {key[:40]!r}")
    topic = value[_COUNT.size :] if is_long_topic_key(key) else key
    return bytes(topic), _COUNT.unpack_from(value)[0]


def iter_long_topics(cursor: lmdb.Cursor[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a topic-keyed database stored under a stand-in key."""
    if cursor.set_range(LONG_TOPIC_MARK):
        for key, value in cursor:
            if not is_long_topic_key(key):
                break
            yield key, value


def state_key(namespace: bytes, key: bytes) -> tuple[bytes, bool]:
    """The stored key for a state entry and whether it is the long form."""
    short = namespace + STATE_SHORT + key
    if len(short) <= MAX_KEY_BYTES:
        return short, False
    return namespace + STATE_LONG + hashlib.sha256(key).digest(), True


def pack_named(key: bytes, value: bytes) -> bytes:
    """The value of a long-form state entry: the key's length, the key, the value."""
    return _NAME_LENGTH.pack(len(key)) + key + value


def unpack_named(raw: bytes) -> tuple[bytes, bytes]:
    """(key, value) of a long-form state entry; ``ValueError`` if malformed."""
    if len(raw) < _NAME_LENGTH.size:
        raise ValueError("long state entry is truncated")
    (length,) = _NAME_LENGTH.unpack_from(raw)
    end = _NAME_LENGTH.size + length
    if len(raw) < end:
        raise ValueError("long state entry is truncated")
    return raw[_NAME_LENGTH.size : end], raw[end:]
