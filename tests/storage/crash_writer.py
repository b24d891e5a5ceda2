"""The child process of test_crash.py: appends until it is killed.

``python -m tests.storage.crash_writer <log dir> <seed>`` opens the LMDB log with
``fsync=always`` and small segments (so kills also land while segments roll),
continues the sequence it finds in the log, and after every append prints the
acknowledged last offset and sequence number, flushing stdout: a printed line
is a promise that those events are durable.

Every event's payload starts with its sequence number, which counts from 0 with
no gaps across restarts; as nothing is ever deleted it always equals the
event's offset, so a lost, duplicated or reordered event shows.
"""

from __future__ import annotations

import random
import sys

import trio

from tidelog.storage import NewEvent, open_log

SEGMENT_BYTES = 64 * 1024


async def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    async with open_log(f"lmdb://{path}", fsync="always", segment_bytes=SEGMENT_BYTES) as log:
        state = await log.state()
        sequence = 0
        if state.next_offset > state.first_offset:
            last = (await log.read(state.next_offset - 1)).events[-1]
            sequence = int(last.payload.split(b":", 1)[0]) + 1
        print("ready", sequence, flush=True)
        while True:
            count = rng.randint(1, 40)
            batch = [
                NewEvent(
                    f"crash/{(sequence + i) % 7}",
                    b"%d:" % (sequence + i) + rng.randbytes(rng.randint(0, 120)),
                )
                for i in range(count)
            ]
            stored = await log.append(batch)
            sequence += count
            print(stored[-1].offset, sequence - 1, flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
