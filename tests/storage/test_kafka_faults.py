"""Three Kafka brokers, replication 3, min ISR 2: brokers die under load."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.kafka_broker import KafkaCluster
from tidelog.errors import StorageError, StorageUnavailableError
from tidelog.storage import NewEvent, open_log


async def test_one_broker_lost_goes_on_two_lost_refuse_and_all_come_back(tmp_path: Path) -> None:
    kafka = KafkaCluster(tmp_path / "kafka", brokers=3, heap_mb=256)
    await trio.to_thread.run_sync(kafka.start)
    acked: list[bytes] = []
    attempts = [0]
    try:
        async with open_log(kafka.url("replicated", timeout_ms=5000)) as log:

            async def publish(count: int) -> None:
                for _ in range(count):
                    attempts[0] += 1
                    payload = b"%06d" % attempts[0]  # a refused attempt may be stored: unique
                    try:
                        await log.append([NewEvent("load", payload)])
                    except StorageUnavailableError:
                        await trio.sleep(0.2)
                        continue
                    acked.append(payload)

            await publish(50)
            await trio.to_thread.run_sync(kafka.stop_broker, 2)  # SIGKILL one of three
            before = len(acked)
            with trio.fail_after(90):
                await publish(50)
            assert len(acked) >= before + 1  # publishing goes on with two in sync

            await trio.to_thread.run_sync(kafka.stop_broker, 1)  # only one broker left
            refused = 0
            for _ in range(3):
                try:
                    await log.append([NewEvent("load", b"refused?")])
                except StorageError:
                    refused += 1
            assert refused == 3  # never acknowledged with one copy

            await trio.to_thread.run_sync(kafka.start_broker, 1)
            await trio.to_thread.run_sync(kafka.start_broker, 2)
            with trio.fail_after(120):
                while True:
                    try:
                        await log.append([NewEvent("load", b"back")])
                        break
                    except StorageError:
                        await trio.sleep(0.5)
            stored = []
            position = 0
            end = (await log.state()).next_offset
            while position < end:
                page = await log.read(position, "load")
                stored.extend(e.payload for e in page.events)
                position = page.next_offset
            for payload in acked:
                assert stored.count(payload) == 1, payload
            assert stored[-1] == b"back"
    finally:
        await trio.to_thread.run_sync(kafka.stop)
