"""Where a cross-node publish spends its time on ``kafka://`` (docs/cluster.md,
"Where the time goes").

    python -m bench.investigations.kafka_stages 127.0.0.1:PORT --messages 3000 --rate 1000
    python -m bench.investigations.kafka_stages 127.0.0.1:PORT --pipeline 1 --linger 0

(``python -m tests.kafka_broker`` prints a broker's address.) One process
appends single events at a fixed rate through the group-commit writer, as a
node does under MQTT publishes; a second process opens the same log and
follows its head, as another node's ``Broker._follow_log`` does. Each payload
carries its send time, so the follower reports per event: send -> Kafka's
append (the record's ``LogAppendTime``, whole milliseconds of the wall clock),
Kafka's append -> the follower's tail thread, the tail thread -> the follower's
read on its trio thread, and send -> read in total; the writer reports how long
its submissions took to be acknowledged. ``--pipeline`` and ``--linger``
override ``KafkaLog.append_pipeline`` and the producer's ``linger.ms`` (in both
processes) to compare settings on the same broker.

The tail's receive time is taken by wrapping the consumer a ``KafkaLog`` makes
(instrumentation of this measurement only; the code measured is unchanged).
"""

from __future__ import annotations

import argparse
import multiprocessing
import struct
import time
import uuid
from typing import Any

import trio

import tidelog.storage.kafka_log as kafka_log
from tidelog.engine.group_commit import GroupCommitWriter
from tidelog.storage import Event, NewEvent, open_log

STAMP = struct.Struct(">qq")
"""A payload's head: the send time, monotonic and wall clock, in nanoseconds."""


def configure(pipeline: int | None, linger: float | None) -> None:
    if pipeline is not None:
        kafka_log.KafkaLog.append_pipeline = pipeline
    if linger is not None:
        producer = kafka_log.Producer

        def with_linger(config: dict[str, Any]) -> Any:
            return producer({**config, "linger.ms": linger})

        kafka_log.Producer = with_linger  # type: ignore[misc,assignment]


def follower(
    url: str, count: int, ready: Any, out: Any, pipeline: int | None, linger: float | None
) -> None:
    configure(pipeline, linger)
    tailed: dict[int, tuple[int, int]] = {}  # offset -> (tail thread's time, LogAppendTime ms)
    make_consumer = kafka_log.KafkaLog._consumer

    def stamped_consumer(self: kafka_log.KafkaLog) -> Any:
        consumer = make_consumer(self)

        class Stamped:
            def __getattr__(self, name: str) -> Any:
                return getattr(consumer, name)

            def consume(self, num: int, timeout: float) -> Any:
                messages = consumer.consume(num, timeout)
                now = time.perf_counter_ns()
                for message in messages:
                    if message.error() is None and message.topic() == log_name:
                        tailed[message.offset()] = (now, message.timestamp()[1])
                return messages

        return Stamped()

    log_name = url.rsplit("/", 1)[1]
    kafka_log.KafkaLog._consumer = stamped_consumer  # type: ignore[method-assign]

    async def run() -> list[tuple[int, int, int, int, int, int]]:
        rows = []
        async with open_log(url) as log:
            position = (await log.state()).next_offset
            ready.set()
            while len(rows) < count:
                await log.wait_for_append(position)
                page = await log.read(position, limit=1000)
                now, wall = time.perf_counter_ns(), time.time_ns()
                for event in page.events:
                    sent, sent_wall = STAMP.unpack_from(event.payload)
                    tail, appended_ms = tailed.pop(event.offset, (0, 0))
                    rows.append((sent, sent_wall, appended_ms, tail, now, wall))
                position = page.next_offset
        return rows

    out.put(trio.run(run))


async def publish(url: str, count: int, rate: float, ready: Any) -> tuple[list[int], int, int]:
    acknowledged: list[int] = []
    async with open_log(url) as log:
        while not ready.is_set():
            await trio.sleep(0.05)
        await trio.sleep(0.5)
        writer = GroupCommitWriter(log, lambda events: None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            start = time.perf_counter()
            for index in range(count):
                delay = start + index / rate - time.perf_counter()
                if delay > 0:
                    await trio.sleep(delay)
                sent = time.perf_counter_ns()
                payload = STAMP.pack(sent, time.time_ns()) + b"p" * 84

                def acked(result: list[Event] | BaseException, sent: int = sent) -> None:
                    acknowledged.append(time.perf_counter_ns() - sent)

                writer.submit_nowait([NewEvent("stages/x", payload, qos=1)], acked)
            await writer.wait_idle()
            writer.close()
        stats = writer.statistics()
        return acknowledged, stats.batches, stats.max_in_flight


def show(name: str, values_ns: list[int]) -> None:
    values = sorted(v / 1e6 for v in values_ns)
    if not values:
        return

    def at(q: float) -> float:
        return values[min(len(values) - 1, int(len(values) * q))]

    print(
        f"  {name:<36} p50 {at(0.5):6.2f}  p90 {at(0.9):6.2f}  p99 {at(0.99):6.2f}"
        f"  max {values[-1]:6.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap", help="host:port of a Kafka broker")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--pipeline", type=int, default=None)
    parser.add_argument("--linger", type=float, default=None)
    args = parser.parse_args()
    url = f"kafka://{args.bootstrap}/stages-{uuid.uuid4().hex[:8]}"
    ready = multiprocessing.Event()
    out: Any = multiprocessing.Queue()
    child = multiprocessing.Process(
        target=follower, args=(url, args.messages, ready, out, args.pipeline, args.linger)
    )
    child.start()
    configure(args.pipeline, args.linger)  # after the fork: the child configures itself
    acknowledged, batches, in_flight = trio.run(publish, url, args.messages, args.rate, ready)
    rows = out.get()
    child.join()
    print(
        f"{args.messages} events at {args.rate:,.0f}/s: {batches} batches,"
        f" at most {in_flight} in flight"
    )
    show("acknowledged to the publisher", acknowledged)
    show("send -> Kafka append (wall, ms)", [a * 1_000_000 - w for _, w, a, *_ in rows if a])
    show(
        "Kafka append -> other's read (wall)",
        [wall - a * 1_000_000 for *_, a, _, _, wall in rows if a],
    )
    show("other tail -> its read", [now - tail for *_, tail, now, _ in rows if tail])
    show("send -> other node's read", [now - sent for sent, *_, now, _ in rows])


if __name__ == "__main__":
    main()
