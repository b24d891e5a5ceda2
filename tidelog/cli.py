"""The ``tidelog`` command.

For now: ``tidelog demo`` appends a few events to the default LMDB log and
replays them by offset, by topic and by time. ``tidelog serve`` arrives with the
MQTT server.
"""

from __future__ import annotations

import argparse
import sys

import trio

from tidelog.storage import DEFAULT_URL, NewEvent, open_log


async def _demo(url: str) -> None:
    async with open_log(url) as log:
        before = await log.state()
        stored = await log.append(
            [NewEvent(f"devices/{n}/temperature", f"{20 + n}.5".encode()) for n in range(40, 45)]
        )
        print(f"appended offsets {stored[0].offset}..{stored[-1].offset} to {url}")
        print("device 42, replayed with the topic filter devices/42/#:")
        result = await log.read(before.next_offset, "devices/42/#")
        for event in result:
            print(f"  offset {event.offset} at {event.timestamp} ms: {event.payload.decode()}")
        since = await log.offset_for_time(stored[0].timestamp)
        print(f"first offset at or after {stored[0].timestamp} ms: {since}")
        state = await log.state()
        print(
            f"log holds offsets {state.first_offset}..{state.next_offset - 1}, {state.bytes} bytes"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidelog", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="append a few events and replay them")
    demo.add_argument("--storage", default=DEFAULT_URL, help=f"storage URL (default {DEFAULT_URL})")
    args = parser.parse_args(argv)
    if args.command == "demo":
        trio.run(_demo, args.storage)
    return 0


if __name__ == "__main__":
    sys.exit(main())
