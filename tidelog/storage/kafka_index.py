"""What a ``kafka://`` node knows about the log it tails: a block index and a cache.

Kafka finds a record by offset or by time, not by MQTT topic, so each node
builds, while it tails the partition, a small index over blocks of
:data:`BLOCK_EVENTS` consecutive offsets: the topics in each block with their
counts, the block's bytes, and the running maximum of tidelog timestamps up to
its end. A filtered read of a rare topic skips every block without a matching
topic (one Kafka fetch per block that has one, instead of a scan of the whole
partition); ``topics()``, the log's byte size and time lookups come from the
same blocks. Memory: one small dict per block (about a hundred bytes per block
plus the distinct topics in it), not per event.

The most recent records (up to ``cache_bytes``) are also kept as the raw bytes
Kafka returned, so live consumers and catch-up reads near the head never go
back to Kafka. Everything here runs on the trio thread, fed batches by the tail
thread; no I/O.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
from collections.abc import Callable

from tidelog.storage.records import record_timestamp, record_topic

BLOCK_EVENTS = 1024
"""Offsets per index block."""


class Block:
    """The index entry of ``BLOCK_EVENTS`` consecutive offsets from ``base``."""

    __slots__ = (
        "base",
        "bytes",
        "count",
        "end",
        "first_timestamp",
        "last",
        "max_timestamp",
        "topics",
    )

    def __init__(self, base: int) -> None:
        self.base = base
        self.end = (base // BLOCK_EVENTS + 1) * BLOCK_EVENTS
        """Blocks end at multiples of BLOCK_EVENTS, so every node cuts the same blocks
        (and one node's checkpoint serves all)."""
        self.count = 0
        self.bytes = 0
        self.topics: Counter[str] = Counter()
        self.last: dict[str, int] = {}
        """Each topic's newest offset in the block."""
        self.first_timestamp: int | None = None
        self.max_timestamp = 0
        """The largest timestamp at or below this block's last offset (a running maximum,
        so time lookups can bisect over blocks even if clocks of nodes differ a little)."""


class LogIndex:
    """Blocks from ``first`` to ``next``, topic counts, bytes and the recent-record cache."""

    def __init__(self, first: int, cache_bytes: int, decode_topic: Callable[[bytes], str]) -> None:
        self.first = first
        self.next = first
        self.bytes = 0
        self.topics: Counter[str] = Counter()
        self.last: dict[str, int] = {}  # a topic's newest offset (stale once its count is 0)
        self._decode_topic = decode_topic
        self._blocks: list[Block] = []
        self._block_bases: list[int] = []
        self._last_timestamp = 0
        self.last_timestamp: int | None = None
        self._cache: list[bytes] = []
        self._cache_first = first
        self._cache_head = 0  # index in _cache of offset _cache_first
        self._cache_bytes = 0
        self._cache_limit = cache_bytes

    # -- growing ---------------------------------------------------------------------

    def add(self, offset: int, record: bytes) -> None:
        """Index the record stored at ``offset`` (offsets arrive in order, dense)."""
        if offset < self.next:
            return  # already indexed (a tail restart overlaps)
        if offset > self.next:  # records vanished (retention raced the tail): restart there
            self.reset(offset)
        if not self._blocks or offset >= self._blocks[-1].end:
            block = Block(offset)
            block.max_timestamp = self._last_timestamp
            self._blocks.append(block)
            self._block_bases.append(block.base)
        block = self._blocks[-1]
        topic = self._decode_topic(record_topic(record))
        timestamp = record_timestamp(record)
        size = len(record)
        block.count += 1
        block.bytes += size
        block.topics[topic] += 1
        block.last[topic] = offset
        if block.first_timestamp is None:
            block.first_timestamp = timestamp
        if timestamp > self._last_timestamp:
            self._last_timestamp = timestamp
        block.max_timestamp = self._last_timestamp
        self.last_timestamp = timestamp
        self.topics[topic] += 1
        self.last[topic] = offset
        self.bytes += size
        self.next = offset + 1
        self._cache.append(record)
        self._cache_bytes += size
        while self._cache_bytes > self._cache_limit and len(self._cache) - self._cache_head > 1:
            self._cache_bytes -= len(self._cache[self._cache_head])
            self._cache[self._cache_head] = b""
            self._cache_head += 1
            self._cache_first += 1
        if self._cache_head > 4096 and self._cache_head * 2 > len(self._cache):
            del self._cache[: self._cache_head]
            self._cache_head = 0

    # -- checkpoints -------------------------------------------------------------------

    def checkpoint(self, start: int, end: int) -> bytes | None:
        """The blocks from ``start`` to ``end`` (block boundaries) as JSON, if this index
        holds every one of their offsets; else None. See :meth:`restore`."""
        if self.first > start or self.next < end:
            return None
        index = bisect.bisect_left(self._block_bases, start)
        blocks = [
            [
                b.base,
                b.count,
                b.bytes,
                b.first_timestamp,
                b.max_timestamp,
                {t: [n, b.last[t]] for t, n in b.topics.items()},
            ]
            for b in self._blocks[index:]
            if b.base < end
        ]
        return json.dumps({"v": 1, "blocks": blocks}, separators=(",", ":")).encode()

    def restore(self, checkpoint: bytes) -> bool:
        """Append a checkpoint's blocks if they continue this index exactly (the first
        starts at :attr:`next`, each at the end of the one before); False (and nothing
        changed) if they do not or it cannot be read: the tail indexes from here."""
        try:
            entries = json.loads(checkpoint)["blocks"]
            blocks = []
            position = self.next
            for base, count, size, first_ts, max_ts, topics in entries:
                block = Block(int(base))
                if block.base < position:
                    continue  # offsets this index already holds (or no longer does)
                if block.base != position or not 0 < int(count) <= block.end - block.base:
                    return False
                block.count, block.bytes = int(count), int(size)
                block.first_timestamp = None if first_ts is None else int(first_ts)
                block.max_timestamp = int(max_ts)
                for topic, (n, last) in topics.items():
                    block.topics[str(topic)] = int(n)
                    block.last[str(topic)] = int(last)
                blocks.append(block)
                position = block.end
        except (ValueError, KeyError, TypeError):
            return False
        if not blocks or (self._blocks and self._blocks[-1].end > blocks[0].base):
            return False  # nothing new, or this index's last block is not whole
        for block in blocks:
            self._blocks.append(block)
            self._block_bases.append(block.base)
            self.topics.update(block.topics)
            for topic, last in block.last.items():
                self.last[topic] = max(last, self.last.get(topic, -1))
            self.bytes += block.bytes
            self._last_timestamp = max(self._last_timestamp, block.max_timestamp)
        self.next = blocks[-1].end
        self.last_timestamp = self._last_timestamp
        self._cache = []
        self._cache_first = self.next
        self._cache_head = 0
        self._cache_bytes = 0
        return True

    def reset(self, first: int) -> None:
        """Forget everything: the log now starts at ``first`` (the tail starts over)."""
        self.__init__(first, self._cache_limit, self._decode_topic)  # type: ignore[misc]

    # -- reading ---------------------------------------------------------------------

    def cached(self, start: int, stop: int) -> list[bytes] | None:
        """Raw records ``start <= offset < stop`` if the cache holds all of them."""
        if start < self._cache_first or stop > self.next:
            return None
        head = self._cache_head + start - self._cache_first
        return self._cache[head : head + stop - start]

    def first_timestamp(self) -> int | None:
        """The timestamp of the first indexed record."""
        return self._blocks[0].first_timestamp if self._blocks else None

    def block_end(self, offset: int) -> int:
        """The end (exclusive) of the block holding ``offset``."""
        index = bisect.bisect_right(self._block_bases, offset) - 1
        if index < 0:
            return min(self.next, offset + BLOCK_EVENTS)
        return min(self.next, self._blocks[index].end)

    def next_candidate(self, offset: int, stop: int, match: Callable[[str], bool]) -> int:
        """The first offset ``>= offset`` in a block holding a topic ``match`` accepts;
        ``stop`` if there is none before it."""
        index = max(0, bisect.bisect_right(self._block_bases, offset) - 1)
        while index < len(self._blocks):
            block = self._blocks[index]
            if block.base >= stop:
                return stop
            if any(map(match, block.topics)):
                return max(offset, block.base)
            index += 1
        return stop

    def time_block(self, timestamp: int) -> int | None:
        """The base of the first block whose running maximum timestamp is ``>= timestamp``;
        None if every indexed record is older."""
        for block in self._blocks:  # few blocks per million events; bisect if it matters
            if block.max_timestamp >= timestamp:
                return max(block.base, self.first)
        return None

    # -- shrinking -------------------------------------------------------------------

    def blocks_before(self, offset: int) -> list[Block]:
        """The whole blocks that end at or before ``offset``."""
        return [b for b in self._blocks if b.end <= offset]

    def offset_for_bytes(self, max_bytes: int) -> int:
        """The first offset of whole blocks to keep so the rest is at most ``max_bytes``
        (whole blocks only; :meth:`drop_before` is exact)."""
        remaining = self.bytes
        for block in self._blocks:
            if remaining <= max_bytes:
                return max(block.base, self.first)
            remaining -= block.bytes
        return self.next

    def drop_before(self, offset: int, partial: list[bytes]) -> tuple[int, int]:
        """Forget offsets below ``offset`` (retention); ``partial`` holds the raw records
        of the dropped part of the block that ``offset`` falls in. Returns the events
        and bytes removed."""
        if offset <= self.first:
            return 0, 0
        removed_events = 0
        removed_bytes = 0
        while self._blocks and self._blocks[0].end <= offset:
            block = self._blocks.pop(0)
            self._block_bases.pop(0)
            removed_events += block.count
            removed_bytes += block.bytes
            self.topics.subtract(block.topics)
        if self._blocks and partial:
            block = self._blocks[0]
            for record in partial:
                topic = self._decode_topic(record_topic(record))
                block.topics[topic] -= 1
                if not block.topics[topic]:
                    del block.topics[topic]
                    block.last.pop(topic, None)
                self.topics[topic] -= 1
                block.bytes -= len(record)
                block.count -= 1
                removed_events += 1
                removed_bytes += len(record)
            block.first_timestamp = None
        self.topics = +self.topics
        self.bytes -= removed_bytes
        self.first = offset
        if self._blocks:
            self._blocks[0].base = offset
            self._block_bases[0] = offset
        while self._cache_first < offset and self._cache_head < len(self._cache):
            self._cache_bytes -= len(self._cache[self._cache_head])
            self._cache[self._cache_head] = b""
            self._cache_head += 1
            self._cache_first += 1
        self._cache_first = max(self._cache_first, offset)
        return removed_events, removed_bytes

    def set_first_timestamp(self, timestamp: int | None) -> None:
        if self._blocks:
            self._blocks[0].first_timestamp = timestamp
