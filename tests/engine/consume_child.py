"""Child process for the consumer-group kill -9 test: four members lease events from an
explicit cursor and acknowledge most of them, printing ``acking <offsets>`` before each
ack and ``acked <offsets>`` once it returned (durable), until killed."""

from __future__ import annotations

import sys

import trio

import tidelog
from tidelog import NewEvent
from tidelog.engine.consumers import ConsumerOptions

EVENTS = 3000
OPTIONS = ConsumerOptions(ack_policy="explicit", ack_wait=3600, max_leased=200)


async def main(url: str) -> None:
    async with tidelog.open(url) as broker:
        if broker.end_offset == 0:
            await broker.publish_many([NewEvent("jobs/x", b"%d" % i) for i in range(EVENTS)])
        cursor = await broker.create_cursor("g", "jobs/#", start="earliest", options=OPTIONS)
        print("ready", flush=True)

        async def member(name: str) -> None:
            while True:
                batch = await cursor.fetch(10, 1.0, member=name)
                keep = [e.offset for e in batch if e.offset % 7]  # every 7th is never acked
                if not keep:
                    continue
                text = " ".join(map(str, keep))
                sys.stdout.write(f"acking {text}\n")
                sys.stdout.flush()
                await cursor.ack(keep)
                sys.stdout.write(f"acked {text}\n")
                sys.stdout.flush()

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(member, f"m{n}")


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
