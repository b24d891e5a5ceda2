"""Child process for the durable-before-ack test: publishes through the broker from
several concurrent publishers and prints ``<offset> <payload>`` for every
acknowledged event, flushing each line, until it is killed."""

from __future__ import annotations

import sys

import trio

import tidelog
from tidelog import NewEvent


async def main(url: str, tag: str) -> None:
    async with tidelog.open(url) as broker:

        async def publisher(n: int) -> None:
            seq = 0
            while True:
                events = [NewEvent(f"crash/{n}", f"{tag}-{n}-{seq + i}".encode()) for i in range(5)]
                stored = await broker.publish_many(events)
                seq += 5
                sys.stdout.write("".join(f"{e.offset} {e.payload.decode()}\n" for e in stored))
                sys.stdout.flush()

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(publisher, n)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2])
