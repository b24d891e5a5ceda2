"""The LMDB log's ``meta`` environment: schema version, cursors, key-value state, topics.

Databases (all keys and values are bytes):

``info``
    ``schema`` -> 8-byte big-endian schema version (1); ``topics_range`` -> the
    range of sealed segments the topic dictionary covers (first base offset and
    the active segment's base, 8 bytes each).
``cursors``
    cursor name (UTF-8) -> 8-byte big-endian signed position, then the metadata
    as compact JSON.
``state``
    namespace (UTF-8), a zero byte, key (UTF-8) -> value. Namespaces cannot
    contain a zero byte, so one namespace's keys never run into another's. A key
    too long for LMDB is stored in the long form of :mod:`lmdb_keys`.
``topics``
    the topic dictionary: topic (UTF-8) -> 8-byte count of its events in the
    sealed segments (long topics as in :mod:`lmdb_keys`). Updated when a
    segment is sealed or dropped, never per append (the active segment's counts
    live in memory). If ``topics_range`` does not match the segments found on
    open (a crash between sealing or dropping a segment and updating the
    dictionary), the log rebuilds it from the segments' own ``counts``.

Writes run in a worker thread, one at a time (a :class:`trio.Lock`); reads run
inline on the trio thread. When the map is full the write is retried after
:meth:`lmdb.Environment.set_mapsize` doubles it, called on the trio thread while
the lock is held, so no transaction of this process is open at that moment.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import lmdb
import trio

from tidelog.errors import CorruptLogError, StorageError
from tidelog.storage.base import CursorState, FsyncPolicy
from tidelog.storage.common import dump_metadata, load_metadata
from tidelog.storage.lmdb_env import U64, lmdb_errors, open_env, translate
from tidelog.storage.lmdb_keys import (
    MAX_KEY_BYTES,
    STATE_LONG,
    STATE_SHORT,
    pack_count,
    pack_named,
    state_key,
    topic_key,
    unpack_count,
    unpack_named,
)

SCHEMA_VERSION = 1
INITIAL_MAP_BYTES = 16 * 1024 * 1024
_POSITION = struct.Struct(">q")
_RANGE = struct.Struct(">QQ")
_DB_NAMES = (b"info", b"cursors", b"state", b"topics")

T = TypeVar("T")


def _state_key(namespace: str, key: str) -> tuple[bytes, bool]:
    """The stored key of a state entry and whether it is the long form (:mod:`lmdb_keys`)."""
    return state_key(_namespace_bytes(namespace), key.encode("utf-8"))


def _namespace_bytes(namespace: str) -> bytes:
    if "\x00" in namespace or "\x01" in namespace:
        raise StorageError(f"state namespace {namespace!r} must not contain U+0000 or U+0001")
    raw = namespace.encode("utf-8")
    if len(raw) > MAX_KEY_BYTES - 40:
        raise StorageError(f"state namespace {namespace!r} is too long")
    return raw


def _cursor_key(name: str) -> bytes:
    raw = name.encode("utf-8")
    if not raw or len(raw) > MAX_KEY_BYTES:
        raise StorageError(f"cursor name must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, not {name!r}")
    return raw


class MetaStore:
    """The ``meta`` environment (see the module docstring)."""

    def __init__(self, path: Path, env: lmdb.Environment) -> None:
        self.path = path
        self.env = env
        self.lock = trio.Lock()
        """Held by every write (and by whoever closes the environment)."""
        self._dirty = False
        # Handles must come from a write transaction to be usable by later ones.
        with lmdb_errors(path), env.begin(write=True) as txn:
            dbs = [env.open_db(name, txn=txn, create=False) for name in _DB_NAMES]
        self._info, self._cursors, self._state, self._topics = dbs

    @classmethod
    def open(cls, path: Path, policy: FsyncPolicy, *, create: bool) -> MetaStore:
        """Open (or, for a new log, create) the meta environment; blocking."""
        if create:
            path.mkdir(parents=True, exist_ok=True)
        env = open_env(
            path,
            readonly=False,
            max_dbs=len(_DB_NAMES) + 2,
            map_size=INITIAL_MAP_BYTES,
            create=create,
            policy=policy,
        )
        try:
            with lmdb_errors(path):
                used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
                if used * 2 > INITIAL_MAP_BYTES:
                    env.set_mapsize(used * 2)
                with env.begin(write=True) as txn:
                    dbs = {name: env.open_db(name, txn=txn, create=True) for name in _DB_NAMES}
                    raw = txn.get(b"schema", db=dbs[b"info"])
                    if raw is None:
                        if not create:
                            raise CorruptLogError(f"{path}: no schema version")
                        txn.put(b"schema", U64.pack(SCHEMA_VERSION), db=dbs[b"info"])
                    elif len(raw) != 8:
                        raise CorruptLogError(f"{path}: malformed schema version")
                    elif U64.unpack(raw)[0] != SCHEMA_VERSION:
                        raise StorageError(
                            f"{path}: schema version {U64.unpack(raw)[0]}, this tidelog "
                            f"reads version {SCHEMA_VERSION}"
                        )
                env.sync(True)
            return cls(path, env)
        except BaseException:
            env.close()
            raise

    def close(self) -> None:
        self.env.close()

    # -- plumbing ------------------------------------------------------------------------

    def read(self, fn: Callable[[lmdb.Transaction[bytes]], T]) -> T:
        """Run ``fn`` in a read transaction, inline."""
        with lmdb_errors(self.path), self.env.begin() as txn:
            return fn(txn)

    def write_sync(self, fn: Callable[[lmdb.Transaction[bytes]], T]) -> T:
        """Run ``fn`` in a write transaction and commit; blocking. Growing the map on the way."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return fn(txn)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as exc:
                raise translate(exc, self.path) from exc

    async def write(self, fn: Callable[[lmdb.Transaction[bytes]], T]) -> T:
        """Run ``fn`` in a write transaction in a worker thread; durable per the fsync policy."""
        async with self.lock:
            while True:
                try:
                    result = await trio.to_thread.run_sync(self._write_once, fn)
                except lmdb.MapFullError:
                    self._grow()  # on the trio thread, under the lock: no transaction is open
                    continue
                self._dirty = True
                return result

    def _write_once(self, fn: Callable[[lmdb.Transaction[bytes]], T]) -> T:
        try:
            with self.env.begin(write=True) as txn:
                return fn(txn)
        except lmdb.MapFullError:
            raise
        except lmdb.Error as exc:
            raise translate(exc, self.path) from exc

    def _grow(self) -> None:
        with lmdb_errors(self.path):
            self.env.set_mapsize(self.env.info()["map_size"] * 2)

    async def sync(self) -> None:
        """Flush to disk if anything was written since the last sync (interval policy)."""
        async with self.lock:
            if self._dirty:
                self._dirty = False
                await trio.to_thread.run_sync(self.sync_now)

    def sync_now(self) -> None:
        """Flush to disk; blocking."""
        with lmdb_errors(self.path):
            self.env.sync(True)

    # -- cursors -------------------------------------------------------------------------

    def load_cursor(self, name: str) -> CursorState | None:
        raw = self.read(lambda txn: txn.get(_cursor_key(name), db=self._cursors))
        return None if raw is None else _decode_cursor(name, raw)

    def list_cursors(self) -> list[CursorState]:
        def scan(txn: lmdb.Transaction[bytes]) -> list[CursorState]:
            return [
                _decode_cursor(key.decode("utf-8"), value)
                for key, value in txn.cursor(self._cursors)
            ]

        return self.read(scan)

    async def commit_cursors(self, cursors: Iterable[CursorState]) -> None:
        await self.commit_cursors_and_state(cursors, {})

    async def commit_cursors_and_state(
        self,
        cursors: Iterable[CursorState],
        state: Mapping[str, Mapping[str, bytes | None]],
    ) -> None:
        """Cursors and state keys in one write transaction (one trip to the worker
        thread, one sync under ``fsync=always``)."""
        items = [
            (
                _cursor_key(c.name),
                _encode_position(c.position) + dump_metadata(c.metadata),
            )
            for c in cursors
        ]
        changes = [
            change
            for namespace, keys in state.items()
            for change in self._state_changes(namespace, keys)
        ]

        def put(txn: lmdb.Transaction[bytes]) -> None:
            for key, value in items:
                txn.put(key, value, db=self._cursors)
            for raw, stored in changes:
                if stored is None:
                    txn.delete(raw, db=self._state)
                else:
                    txn.put(raw, stored, db=self._state)

        await self.write(put)

    async def delete_cursor(self, name: str) -> bool:
        key = _cursor_key(name)
        return await self.write(lambda txn: txn.delete(key, db=self._cursors))

    # -- key-value state -----------------------------------------------------------------

    def get_state(self, namespace: str, key: str) -> bytes | None:
        raw, long = _state_key(namespace, key)
        value = self.read(lambda txn: txn.get(raw, db=self._state))
        if value is None or not long:
            return value
        stored_key, stored = self._unpack_long(raw, value)
        return stored if stored_key == key.encode("utf-8") else None

    def list_state(self, namespace: str) -> dict[str, bytes]:
        ns = _namespace_bytes(namespace)

        def scan(txn: lmdb.Transaction[bytes]) -> dict[str, bytes]:
            out: dict[str, bytes] = {}
            for mark in (STATE_SHORT, STATE_LONG):
                prefix = ns + mark
                cursor = txn.cursor(self._state)
                if not cursor.set_range(prefix):
                    continue
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    if mark == STATE_SHORT:
                        out[key[len(prefix) :].decode("utf-8")] = value
                    else:
                        name, stored = self._unpack_long(key, value)
                        out[name.decode("utf-8")] = stored
            return out

        return self.read(scan)

    def _unpack_long(self, key: bytes, value: bytes) -> tuple[bytes, bytes]:
        try:
            return unpack_named(value)
        except ValueError as exc:
            raise CorruptLogError(f"{self.path}: state entry {key[:40]!r}: {exc}") from None

    def _state_changes(
        self, namespace: str, items: Mapping[str, bytes | None]
    ) -> list[tuple[bytes, bytes | None]]:
        """The LMDB keys and values (None: delete) of state keys of a namespace."""
        changes = []
        for key, value in items.items():
            raw, long = _state_key(namespace, key)
            if value is not None and long:
                value = pack_named(key.encode("utf-8"), bytes(value))
            changes.append((raw, None if value is None else bytes(value)))
        return changes

    async def put_state(self, namespace: str, items: Mapping[str, bytes | None]) -> None:
        await self.commit_cursors_and_state((), {namespace: items})

    # -- the topic dictionary --------------------------------------------------------------

    def load_topics(self) -> tuple[tuple[int, int] | None, dict[str, int]]:
        """The covered segment range (or None) and the counts per topic."""

        def scan(txn: lmdb.Transaction[bytes]) -> tuple[tuple[int, int] | None, dict[str, int]]:
            raw = txn.get(b"topics_range", db=self._info)
            covered = None
            if raw is not None and len(raw) == _RANGE.size:
                first, end = _RANGE.unpack(raw)
                covered = (int(first), int(end))
            counts = {}
            for key, value in txn.cursor(self._topics):
                topic, count = unpack_count(key, value)
                counts[topic.decode("utf-8")] = count
            return covered, counts

        try:
            return self.read(scan)
        except (UnicodeDecodeError, ValueError):  # rebuilt from the segments
            return None, {}

    def replace_topics_sync(self, counts: Mapping[str, int], covered: tuple[int, int]) -> None:
        """Rewrite the whole dictionary (recovery); blocking."""

        def put(txn: lmdb.Transaction[bytes]) -> None:
            txn.drop(self._topics, delete=False)
            for topic, count in counts.items():
                if count:
                    raw = topic.encode("utf-8")
                    txn.put(topic_key(raw), pack_count(raw, count), db=self._topics)
            txn.put(b"topics_range", _RANGE.pack(*covered), db=self._info)

        self.write_sync(put)
        self.sync_now()

    async def adjust_topics(self, deltas: Mapping[str, int], covered: tuple[int, int]) -> None:
        """Add ``deltas`` (negative when a segment is dropped) and record the covered range."""

        def put(txn: lmdb.Transaction[bytes]) -> None:
            for topic, delta in deltas.items():
                name = topic.encode("utf-8")
                key = topic_key(name)
                raw = txn.get(key, db=self._topics)
                count = (U64.unpack_from(raw)[0] if raw is not None else 0) + delta
                if count > 0:
                    txn.put(key, pack_count(name, count), db=self._topics)
                elif raw is not None:
                    txn.delete(key, db=self._topics)
            txn.put(b"topics_range", _RANGE.pack(*covered), db=self._info)

        await self.write(put)


def _encode_position(position: int) -> bytes:
    try:
        return _POSITION.pack(position)
    except struct.error:
        raise StorageError(f"cursor position {position!r} is out of range") from None


def _decode_cursor(name: str, raw: bytes) -> CursorState:
    if len(raw) < _POSITION.size:
        raise CorruptLogError(f"cursor {name!r} is malformed")
    try:
        metadata = load_metadata(raw[_POSITION.size :])
    except ValueError as exc:
        raise CorruptLogError(f"cursor {name!r}: bad metadata: {exc}") from None
    return CursorState(name, _POSITION.unpack_from(raw)[0], metadata)
