"""``kafka://host:port[,host:port...]/<log-name>[?options]``: the log is a Kafka partition.

A tidelog log is one Kafka topic ``<log-name>`` with one partition, so tidelog
offsets are that partition's offsets: dense (an idempotent producer, no
transactions, no compaction), totally ordered, and the same on every node that
opens the same URL. State (cursors, sessions, retained messages, wills) lives
in the compacted topic ``<log-name>.state`` (:mod:`tidelog.storage.kafka_state`).
Each Kafka record of the log holds:

* value: the tidelog record (format v2, :mod:`tidelog.storage.records`) with the
  topic, tidelog timestamp, flags, provenance, properties, payload and CRC-32C,
  so a record read back from Kafka is checked and decoded like one from LMDB;
* key: the MQTT topic (UTF-8), so Kafka tools show it and a log spread over
  several partitions would keep each MQTT topic's order (docs/storage.md);
* headers: none (every field is in the value; headers would cost bytes per record);
* timestamp: ``LogAppendTime``, set by the partition leader, which Kafka's own
  retention and time index use; tidelog's timestamp (the appending node's
  clock, never below the newest timestamp that node has seen) is in the value.

Threads, never the trio loop, talk to Kafka: the producer's poll thread (delivery
reports), a tail thread per topic that follows the partition from its start and
hands batches of records to the trio thread (the block index and recent-record
cache of :mod:`tidelog.storage.kafka_index`, the state view), and short-lived
worker threads for produce calls and for reads of older records. An append is
returned only after Kafka acknowledged every record (``acks=all``) *and* this
node's tail has read them, so what an append returned is readable at once.

This module imports nothing from the engine; ``shared`` tells the engine that
other nodes append to the same log, so it must route events from the tail.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import trio
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tidelog.errors import (
    InvalidStorageURLError,
    StorageError,
    StorageUnavailableError,
)
from tidelog.storage.base import (
    DEFAULT_READ_LIMIT,
    DEFAULT_READ_MAX_BYTES,
    AppendNotifier,
    CursorState,
    EventLog,
    LogOptions,
    LogState,
    LogStatistics,
    ReadResult,
    RetentionResult,
    TopicInfo,
)
from tidelog.storage.common import (
    MAX_SCAN_PER_READ,
    check_filter,
    check_open,
    check_start,
    dump_metadata,
    encode_batch,
    load_metadata,
)
from tidelog.storage.kafka_index import BLOCK_EVENTS, LogIndex
from tidelog.storage.kafka_state import (
    StateView,
    cursor_key,
    cursor_value,
    state_key,
    state_value,
)
from tidelog.storage.records import (
    Event,
    NewEvent,
    _topic_str,
    decode_record,
    decode_run,
    record_timestamp,
    record_topic,
)
from tidelog.topics import compile_filter

log = logging.getLogger(__name__)
kafka_log = logging.getLogger("tidelog.storage.kafka.client")

TAIL_BATCH = 5000
"""Records a tail thread hands to the trio thread at most at once."""
TAIL_BATCHES_IN_FLIGHT = 4
"""Batches a tail thread may hand over before the trio thread has applied them."""
QUEUE_MESSAGES = 1_000_000
"""Records the producer may hold before Kafka acknowledged them (50 times the
group-commit writer's largest batch; bytes are bounded by queue.buffering.max.kbytes)."""
INDEX_NAMESPACE = "kafka.index"
"""State namespace of the block index checkpoints: key = span number, value = JSON."""
RECORD_OVERHEAD = 1024 * 1024
"""Room above ``max_record_bytes`` in Kafka's size limits (record batch headers, key)."""


def parse_location(path: str) -> tuple[str, str]:
    """``host:port[,host:port]/<log-name>`` -> (bootstrap servers, log name)."""
    servers, _, name = path.partition("/")
    name = name.strip("/")
    if not servers or not name:
        raise InvalidStorageURLError(
            f"kafka storage URL needs brokers and a log name: kafka://host:port/<log-name>, "
            f"not kafka://{path}"
        )
    if not all(c.isalnum() or c in "._-" for c in name) or len(name) > 200:
        raise InvalidStorageURLError(
            f"kafka log name {name!r}: use letters, digits, '.', '_' and '-' (a Kafka topic name)"
        )
    return servers, name


async def _no_events() -> list[Event]:
    return []


class _Batch:
    """Delivery reports of one produce call, counted in the producer's poll thread.

    The records of a batch go to one partition of one idempotent producer, whose
    delivery reports come in produce order, so the n-th report is the n-th record's
    (one bound method for the whole batch: no callback object per record)."""

    __slots__ = ("_left", "_token", "done", "error", "offsets")

    def __init__(self, count: int, token: trio.lowlevel.TrioToken) -> None:
        self.offsets: list[int] = []
        self.error: KafkaError | None = None
        self._left = count
        self._token = token
        self.done = trio.Event()

    def report(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.error = self.error or error
        self.offsets.append(message.offset() or 0)
        self._left -= 1
        if self._left == 0:
            self._token.run_sync_soon(self.done.set)


class KafkaLog(EventLog):
    """An :class:`EventLog` on a Kafka partition (see the module docstring)."""

    backend_name = "kafka"
    shared = True
    append_pipeline = 2
    """Appends in flight: a batch is sent while the one before waits for its round
    trip to Kafka and the tail. Measured at 1,000 appends/s on a loaded machine
    (docs/cluster.md): 2 cut the median as much as 3 or 4 did, whose p90/p99 were
    worse."""

    def __init__(self, servers: str, name: str, options: LogOptions) -> None:
        self._servers = servers
        self._name = name
        self._state_topic = f"{name}.state"
        self._options = options
        self._token = trio.lowlevel.current_trio_token()
        self._closed = False
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._index = LogIndex(0, options.cache_bytes, _topic_str)
        self._notifier = AppendNotifier(0)
        self._view = StateView()
        self._state_progress = trio.lowlevel.ParkingLot()
        self._tail_room = threading.Semaphore(TAIL_BATCHES_IN_FLIGHT)
        self._state_room = threading.Semaphore(TAIL_BATCHES_IN_FLIGHT)
        self._last_timestamp = 0
        self._readers: list[Consumer] = []
        self._unreachable: str | None = None
        self._last_probe = 0.0
        self._tail_error: str | None = None
        self._checkpointed = 0
        """Index checkpoints are stored (or known) up to here."""
        self._stats = {
            "appends": 0,
            "appended_events": 0,
            "appended_bytes": 0,
            "reads": 0,
            "read_events": 0,
        }
        common: dict[str, Any] = {"bootstrap.servers": servers, "logger": kafka_log}
        self._common = common
        admin_config: dict[str, Any] = {**common, "error_cb": self._on_client_error}
        self._admin = AdminClient(admin_config)
        self._producer = Producer(
            {
                **common,
                "enable.idempotence": True,
                "acks": "all",
                # 1 ms, not 0: measured at 1,000 appends/s, linger.ms=0 gave a lower
                # median but a several times worse p90/p99 (docs/cluster.md)
                "linger.ms": 1,
                "queue.buffering.max.messages": QUEUE_MESSAGES,
                "message.max.bytes": options.max_record_bytes + RECORD_OVERHEAD,
                "message.timeout.ms": options.timeout_ms,
                "queue.buffering.max.kbytes": 256 * 1024,
                "error_cb": self._on_client_error,
            }
        )
        self._meta = self._consumer()

    def __repr__(self) -> str:
        return f"kafka://{self._servers}/{self._name}"

    # -- opening ---------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | None, options: LogOptions) -> KafkaLog:
        servers, name = parse_location(path or "")
        self = cls(servers, name, options)
        try:
            low, high, state_high = await trio.to_thread.run_sync(self._prepare)
            self._index.reset(low)
            self._notifier.next_offset = low
            self._start_thread("kafka-producer", self._poll_producer)
            self._start_thread("kafka-state", self._tail, self._state_topic, self._on_state, 0)
            with trio.fail_after(max(30.0, options.timeout_ms / 1000)):
                while self._view.next_offset < state_high:
                    await self._state_progress.park()
                start = await self._restore_index(low, high)
                self._notifier.notify(start)
                self._checkpointed = start
                self._start_thread("kafka-tail", self._tail, self._name, self._on_records, start)
                if high > low:
                    await self._notifier.wait(high - 1)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.aclose()
            raise
        log.info("kafka log %s opened: offsets %d-%d", self, low, high)
        return self

    async def _restore_index(self, low: int, high: int) -> int:
        """Rebuild the block index from the checkpoints in the state topic (written by
        any node, :meth:`_checkpoint`) instead of reading the partition: the records
        up to the first block boundary are read from Kafka, then each checkpoint that
        continues the index is appended. Returns where the tail starts."""
        index = self._index
        every = self._checkpoint_events()
        stored = self._view.namespaces.get(INDEX_NAMESPACE, {})
        if not every or not stored or high - low < BLOCK_EVENTS:
            return low
        boundary = min(high, -(-low // BLOCK_EVENTS) * BLOCK_EVENTS)
        if boundary > low:
            for offset, record in await self._records(low, boundary):
                index.add(offset, record)
        while (span := stored.get(str(index.next // every))) is not None and index.restore(span):
            pass
        if index.next > boundary:
            log.info("kafka log %s: block index read from checkpoints up to %d", self, index.next)
        return index.next

    def _checkpoint_events(self) -> int:
        """Offsets per index checkpoint: whole blocks, 0 if off."""
        return self._options.index_checkpoint_events // BLOCK_EVENTS * BLOCK_EVENTS

    def _checkpoint(self) -> None:
        """Store the index of every checkpoint span the tail has completed that no node
        stored yet (best effort, not awaited: a lost one only makes a start slower)."""
        every = self._checkpoint_events()
        index = self._index
        stored = self._view.namespaces.get(INDEX_NAMESPACE, {})
        for span in range(self._checkpointed // every, index.next // every):
            data = index.checkpoint(span * every, (span + 1) * every)
            if str(span) in stored or data is None or len(data) > self._options.max_record_bytes:
                continue
            try:
                key = state_key(INDEX_NAMESPACE, str(span))
                self._producer.produce(self._state_topic, state_value(data), key)
            except (BufferError, KafkaException) as exc:
                log.info("kafka log %s: index checkpoint %d not stored: %s", self, span, exc)
        self._checkpointed = index.next // every * every

    def _prepare(self) -> tuple[int, int, int]:
        """Create both topics if needed; their watermarks (in a worker thread)."""
        try:
            metadata = self._admin.list_topics(timeout=self._options.timeout_ms / 1000)
        except KafkaException as exc:
            raise StorageUnavailableError(
                f"Kafka at {self._servers} is unreachable: {exc}"
            ) from exc
        brokers = len(metadata.brokers)
        replicas = self._options.replication_factor or min(3, brokers)
        min_isr = self._options.min_insync_replicas or max(1, replicas - 1)
        common = {
            "min.insync.replicas": str(min_isr),
            "unclean.leader.election.enable": "false",
            "max.message.bytes": str(self._options.max_record_bytes + RECORD_OVERHEAD),
        }
        wanted = [
            NewTopic(
                self._name,
                1,
                replicas,
                config={
                    **common,
                    "cleanup.policy": "delete",
                    "message.timestamp.type": "LogAppendTime",
                    "retention.ms": str(self._options.retention_ms or -1),
                    "retention.bytes": str(self._options.retention_bytes or -1),
                },
            ),
            NewTopic(
                self._state_topic, 1, replicas, config={**common, "cleanup.policy": "compact"}
            ),
        ]
        missing = [t for t in wanted if t.topic not in metadata.topics]
        if missing:
            for topic, future in self._admin.create_topics(missing).items():
                try:
                    future.result()
                    log.info(
                        "created Kafka topic %s (replication %d, min ISR %d)",
                        topic,
                        replicas,
                        min_isr,
                    )
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise StorageError(f"cannot create Kafka topic {topic}: {exc}") from exc
        else:
            partitions = len(metadata.topics[self._name].partitions)
            if partitions != 1:
                raise StorageError(
                    f"Kafka topic {self._name} has {partitions} partitions; a tidelog log is "
                    "one topic with one partition"
                )
        low, high = self._watermarks(self._name)
        return low, high, self._watermarks(self._state_topic)[1]

    def _watermarks(self, topic: str) -> tuple[int, int]:
        deadline = time.monotonic() + self._options.timeout_ms / 1000
        while True:
            try:
                low, high = self._meta.get_watermark_offsets(
                    TopicPartition(topic, 0), timeout=self._options.timeout_ms / 1000
                )
                return int(low), int(high)
            except KafkaException as exc:  # a new topic's leader may take a moment
                if time.monotonic() > deadline:
                    raise StorageUnavailableError(
                        f"Kafka at {self._servers}: no offsets for {topic}: {exc}"
                    ) from exc
                time.sleep(0.1)

    def _consumer(self) -> Consumer:
        return Consumer(
            {
                **self._common,
                "group.id": f"tidelog-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
                "fetch.queue.backoff.ms": 0,
                "isolation.level": "read_uncommitted",
            }
        )

    def _start_thread(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(
            target=target, args=args, name=f"{name}-{self._name}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    # -- threads ---------------------------------------------------------------------

    def _on_client_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (a client thread): note when Kafka is unreachable."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN:  # one broker down is Kafka's business
            self._unreachable = f"Kafka at {self._servers} is unreachable: {error.str()}"
        kafka_log.warning("%s: %s", self, error.str())

    def _poll_producer(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.05)

    def _tail(
        self,
        topic: str,
        apply: Callable[[list[tuple[int, bytes | None, bytes | None]]], None],
        start: int,
    ) -> None:
        """Follow ``topic`` from ``start`` (0: its beginning); hand records to the trio
        thread in batches."""
        room = self._tail_room if topic == self._name else self._state_room
        consumer = self._consumer()
        consumer.assign([TopicPartition(topic, 0, start or OFFSET_BEGINNING)])
        try:
            while not self._stopping.is_set():
                # what has arrived, at once; else wait for the first record only:
                # consume(n, timeout) waits for n records or the timeout, which at
                # low rates added the whole timeout to every append and delivery
                messages = consumer.consume(TAIL_BATCH, 0)
                if not messages:
                    messages = consumer.consume(1, 0.1)
                    if messages:
                        messages += consumer.consume(TAIL_BATCH - 1, 0)
                batch: list[tuple[int, bytes | None, bytes | None]] = []
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            self._tail_error = f"{topic}: {error.str()}"
                            kafka_log.warning("%s: tail of %s: %s", self, topic, error.str())
                        continue
                    batch.append((message.offset() or 0, message.key(), message.value()))
                if batch:
                    self._unreachable = None
                    while not room.acquire(timeout=0.1):
                        if self._stopping.is_set():
                            return
                    try:
                        self._token.run_sync_soon(apply, batch)
                    except trio.RunFinishedError:
                        return
        finally:
            consumer.close()

    def _on_records(self, batch: list[tuple[int, bytes | None, bytes | None]]) -> None:
        """The trio thread: index records the tail read."""
        self._tail_room.release()
        index = self._index
        for offset, _, value in batch:
            if value is not None:
                index.add(offset, value)
        if index.last_timestamp is not None:
            self._last_timestamp = max(self._last_timestamp, index.last_timestamp)
        self._notifier.notify(index.next)
        every = self._checkpoint_events()
        if every and index.next >= self._checkpointed + every:
            self._checkpoint()

    def _on_state(self, batch: list[tuple[int, bytes | None, bytes | None]]) -> None:
        self._state_room.release()
        for offset, key, value in batch:
            self._view.apply(offset, key, value)
        self._state_progress.unpark_all()

    # -- producing -------------------------------------------------------------------

    def _check_reachable(self) -> None:
        """Refuse at once while Kafka is known to be down, except for one attempt per
        second (its success, or the tail reading again, clears the state)."""
        if self._unreachable is not None:
            now = time.monotonic()
            if now - self._last_probe < 1.0:
                raise StorageUnavailableError(self._unreachable)
            self._last_probe = now

    def _send(self, topic: str, items: Sequence[tuple[bytes, bytes | None]]) -> _Batch:
        """Queue records for Kafka at once (their order is Kafka's order); the batch
        whose delivery reports :meth:`_acknowledged` waits for.

        ``produce_batch`` only queues (one call for the batch, one wake-up of
        librdkafka's sender), so it runs on the trio thread, never blocking and
        without a hop to a worker thread."""
        producer = self._producer
        if len(producer) + len(items) > QUEUE_MESSAGES and len(producer):
            raise StorageUnavailableError(
                f"Kafka has not acknowledged the {len(producer)} records this node sent"
            )
        batch = _Batch(len(items), self._token)
        messages: list[dict[str, Any]] = [{"key": key, "value": value} for key, value in items]
        queued = producer.produce_batch(topic, messages, partition=0, on_delivery=batch.report)
        if queued != len(items):
            failed = next((m["_error"] for m in messages if "_error" in m), None)
            raise StorageError(
                f"Kafka's producer queued {queued} of {len(items)} records ({failed}); "
                "those queued may be stored"
            )
        return batch

    async def _acknowledged(self, batch: _Batch) -> list[int]:
        """Wait for Kafka's acknowledgement of every record of ``batch``; their offsets."""
        await batch.done.wait()
        if batch.error is not None:
            code = batch.error.code()
            if code in (
                KafkaError._MSG_TIMED_OUT,
                KafkaError._TRANSPORT,
                KafkaError._ALL_BROKERS_DOWN,
            ):
                raise StorageUnavailableError(
                    f"Kafka did not acknowledge the batch ({batch.error.str()}); "
                    "it may be partly stored"
                )
            raise StorageError(f"Kafka refused the batch: {batch.error.str()}")
        self._unreachable = None
        return batch.offsets

    async def _produce(self, topic: str, items: Sequence[tuple[bytes, bytes | None]]) -> list[int]:
        """Produce records and wait for Kafka's acknowledgement of all; their offsets."""
        return await self._acknowledged(self._send(topic, items))

    def begin_append(self, events: Sequence[NewEvent]) -> Callable[[], Awaitable[list[Event]]]:
        """Encode and queue the batch for Kafka now (several may be in flight: Kafka
        keeps their order, ``append_pipeline``); the function returned waits until
        Kafka acknowledged it and this node's tail has read it."""
        check_open(self._closed)
        if not events:
            return _no_events
        timestamp = max(self._options.clock(), self._last_timestamp)
        records = encode_batch(events, timestamp, self._options.max_record_bytes)
        self._check_reachable()
        batch = self._send(self._name, [(record_topic(r), r) for r in records])
        self._last_timestamp = timestamp

        async def finish() -> list[Event]:
            offsets = await self._acknowledged(batch)
            await self._notifier.wait(max(offsets))  # readable here once the tail has it
            check_open(self._closed)
            stats = self._stats
            stats["appends"] += 1
            stats["appended_events"] += len(records)
            stats["appended_bytes"] += sum(map(len, records))
            return [
                Event(
                    offset,
                    timestamp,
                    e.topic,
                    e.payload,
                    e.qos,
                    e.retain,
                    e.properties,
                    e.provenance,
                )
                for offset, e in zip(offsets, events, strict=True)
            ]

        return finish

    async def append(self, events: Sequence[NewEvent]) -> list[Event]:
        check_open(self._closed)
        if not events:
            return []
        return await self.begin_append(events)()

    # -- reading ---------------------------------------------------------------------

    async def _records(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        """Raw records ``start <= offset < stop``: from the cache, else from Kafka."""
        cached = self._index.cached(start, stop)
        if cached is not None:
            return list(zip(range(start, stop), cached, strict=True))
        return await trio.to_thread.run_sync(self._fetch, start, stop)

    def _fetch(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        """Read offsets ``start``..``stop`` from Kafka (a worker thread)."""
        consumer = self._readers.pop() if self._readers else self._consumer()
        out: list[tuple[int, bytes]] = []
        try:
            consumer.assign([TopicPartition(self._name, 0, start)])
            deadline = time.monotonic() + self._options.timeout_ms / 1000
            position = start
            while position < stop:
                messages = consumer.consume(min(TAIL_BATCH, stop - position), 0.5)
                for message in messages:
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise StorageError(f"reading {self}: {error.str()}")
                    offset = message.offset() or 0
                    value = message.value()
                    if offset < position or value is None:
                        continue
                    if offset >= stop:
                        position = stop
                        break
                    out.append((offset, value))
                    position = offset + 1
                if not messages and time.monotonic() > deadline:
                    raise StorageUnavailableError(
                        f"{self}: offsets {position}-{stop} could not be read from Kafka"
                    )
            consumer.unassign()
        except BaseException:
            consumer.close()
            raise
        self._readers.append(consumer)
        return out

    async def read(
        self,
        start: int,
        topic_filter: str | None = None,
        *,
        limit: int = DEFAULT_READ_LIMIT,
        max_bytes: int | None = DEFAULT_READ_MAX_BYTES,
        end: int | None = None,
    ) -> ReadResult:
        check_open(self._closed)
        topic_filter = check_filter(topic_filter)
        index = self._index
        start = check_start(start, index.first, index.next)
        stop = index.next if end is None else max(start, min(end, index.next))
        match = compile_filter(topic_filter) if topic_filter is not None else None
        out: list[Event] = []
        total = 0
        position = start
        scanned = 0
        done = False
        while position < stop and not done and scanned < MAX_SCAN_PER_READ:
            if match is not None:
                position = index.next_candidate(position, stop, match)
                if position >= stop:
                    break
            chunk_stop = min(stop, index.block_end(position), position + max(limit, 1) * 4)
            if match is None:
                chunk_stop = min(chunk_stop, position + limit)
            records = await self._records(position, chunk_stop)
            check_open(self._closed)
            if match is None:  # every record: decoded as one run (one checksum pass)
                del records[limit - len(out) :]
                offsets = [offset for offset, _ in records]
                count, total, full = decode_run(
                    [raw for _, raw in records], offsets, out, max_bytes, total
                )
                scanned += count
                position = offsets[count - 1] + 1 if count else position
                if full or len(out) >= limit:
                    done = True
                elif count == len(offsets):
                    position = chunk_stop
                continue
            for offset, raw in records:
                scanned += 1
                if match is not None and not match(_topic_str(record_topic(raw))):
                    position = offset + 1
                    continue
                size = len(raw)
                if out and max_bytes is not None and total + size > max_bytes:
                    position = offset
                    done = True
                    break
                total += size
                out.append(decode_record(offset, raw))
                position = offset + 1
                if len(out) >= limit:
                    done = True
                    break
            else:
                position = chunk_stop
        self._stats["reads"] += 1
        self._stats["read_events"] += len(out)
        return ReadResult(out, position)

    async def offset_for_time(self, timestamp: int) -> int:
        check_open(self._closed)
        index = self._index
        base = index.time_block(timestamp)
        if base is None:
            return index.next
        for offset, raw in await self._records(base, index.block_end(base)):
            if record_timestamp(raw) >= timestamp:
                return offset
        return index.block_end(base)

    async def state(self) -> LogState:
        check_open(self._closed)
        index = self._index
        return LogState(
            first_offset=index.first,
            next_offset=index.next,
            first_timestamp=index.first_timestamp(),
            last_timestamp=index.last_timestamp,
            bytes=index.bytes,
        )

    async def topics(self, topic_filter: str | None = None) -> list[TopicInfo]:
        check_open(self._closed)
        match = compile_filter(check_filter(topic_filter) or "#") if topic_filter else None
        return [
            TopicInfo(topic, count, self._index.last[topic])
            for topic, count in sorted(self._index.topics.items())
            if count > 0 and (match is None or match(topic))
        ]

    async def wait_for_append(self, offset: int) -> int:
        check_open(self._closed)
        return await self._notifier.wait(offset)

    def statistics(self) -> LogStatistics:
        index = self._index
        return LogStatistics(
            backend=self.backend_name,
            first_offset=index.first,
            next_offset=index.next,
            bytes=index.bytes,
            durable_offset=index.next,
            **self._stats,
        )

    # -- state -----------------------------------------------------------------------

    async def _sync_state(self) -> None:
        """Wait until this node has applied every state record Kafka holds now, so a
        cursor or session written through another node is seen here."""
        try:
            _, high = await trio.to_thread.run_sync(self._watermarks, self._state_topic)
        except StorageUnavailableError:
            self._check_reachable()
            raise
        while self._view.next_offset < high:
            await self._state_progress.park()
            check_open(self._closed)

    async def _put(self, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        if not items:
            return
        self._check_reachable()
        offsets = await self._produce(self._state_topic, items)
        for offset, (key, value) in zip(offsets, items, strict=True):
            self._view.apply(offset, key, value)

    async def load_cursor(self, name: str) -> CursorState | None:
        check_open(self._closed)
        await self._sync_state()
        found = self._view.cursors.get(name)
        return None if found is None else CursorState(name, found[0], load_metadata(found[1]))

    async def commit_cursors(self, cursors: Sequence[CursorState]) -> None:
        check_open(self._closed)
        items = [
            (cursor_key(c.name), cursor_value(c.position, dump_metadata(c.metadata)))
            for c in cursors
        ]
        await self._put(items)

    async def delete_cursor(self, name: str) -> bool:
        check_open(self._closed)
        await self._sync_state()
        if name not in self._view.cursors:
            return False
        await self._put([(cursor_key(name), None)])
        return True

    async def list_cursors(self) -> list[CursorState]:
        check_open(self._closed)
        await self._sync_state()
        return [
            CursorState(name, position, load_metadata(metadata))
            for name, (position, metadata) in sorted(self._view.cursors.items())
        ]

    async def get_state(self, namespace: str, key: str) -> bytes | None:
        check_open(self._closed)
        await self._sync_state()
        return self._view.namespaces.get(namespace, {}).get(key)

    async def put_state(self, namespace: str, items: Mapping[str, bytes | None]) -> None:
        check_open(self._closed)
        await self._put(
            [
                (state_key(namespace, key), None if value is None else state_value(bytes(value)))
                for key, value in items.items()
            ]
        )

    async def list_state(self, namespace: str) -> dict[str, bytes]:
        check_open(self._closed)
        await self._sync_state()
        return dict(self._view.namespaces.get(namespace, {}))

    # -- retention and closing -------------------------------------------------------

    async def apply_retention(
        self, *, max_age_ms: int | None = None, max_bytes: int | None = None
    ) -> RetentionResult:
        """Drop a prefix with Kafka's DeleteRecords (the partition's log start moves)."""
        check_open(self._closed)
        if max_age_ms is None and max_bytes is None:
            max_age_ms, max_bytes = self._options.retention_ms, self._options.retention_bytes
        index = self._index
        cut = index.first
        if max_age_ms is not None:
            cut = max(cut, await self.offset_for_time(self._options.clock() - max_age_ms))
        if max_bytes is not None and index.bytes > max_bytes:
            whole = index.offset_for_bytes(max_bytes)
            remaining = index.bytes - sum(b.bytes for b in index.blocks_before(whole))
            if whole < index.next and remaining > max_bytes:
                for offset, raw in await self._records(whole, index.block_end(whole)):
                    if remaining <= max_bytes:
                        break
                    remaining -= len(raw)
                    whole = offset + 1
            cut = max(cut, whole)
        if cut <= index.first:
            return RetentionResult(0, 0, index.first)
        # what the index must forget is read before Kafka deletes it
        block_start = max(index.first, max((b.end for b in index.blocks_before(cut)), default=0))
        partial = (
            [raw for _, raw in await self._records(block_start, cut)] if block_start < cut else []
        )
        after = await self._records(cut, cut + 1) if cut < index.next else []
        await trio.to_thread.run_sync(self._delete_records, cut)
        removed_events, removed_bytes = index.drop_before(cut, partial)
        index.set_first_timestamp(record_timestamp(after[0][1]) if after else None)
        every = self._checkpoint_events()
        gone = [
            span
            for span in self._view.namespaces.get(INDEX_NAMESPACE, {})
            if every and span.isdigit() and (int(span) + 1) * every <= index.first
        ]
        if gone:  # index checkpoints of offsets that no longer exist
            await self.put_state(INDEX_NAMESPACE, dict.fromkeys(gone))
        return RetentionResult(removed_events, removed_bytes, index.first)

    def _delete_records(self, offset: int) -> None:
        futures = self._admin.delete_records([TopicPartition(self._name, 0, offset)])
        for future in futures.values():
            try:
                future.result()
            except KafkaException as exc:
                raise StorageError(f"{self}: deleting records below {offset}: {exc}") from exc

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._notifier.close()
        self._state_progress.unpark_all()
        self._stopping.set()

        def stop() -> None:
            for thread in self._threads:
                thread.join()
            self._producer.flush(self._options.timeout_ms / 1000)
            for consumer in [*self._readers, self._meta]:
                consumer.close()

        await trio.to_thread.run_sync(stop)
