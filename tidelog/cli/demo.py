"""``tidelog demo``: append a few events to a log and replay them by offset, topic and time."""

from __future__ import annotations

import argparse
from typing import Any

from tidelog.cli.common import add_parser
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


def _run(args: argparse.Namespace) -> int:
    import trio

    trio.run(_demo, args.storage)
    return 0


def register(commands: Any) -> None:
    demo = add_parser(
        commands,
        "demo",
        "append a few events to a log and replay them",
        "tidelog demo --storage sqlite://./demo.db",
    )
    demo.add_argument("--storage", default=DEFAULT_URL, help=f"storage URL (default {DEFAULT_URL})")
    demo.set_defaults(func=_run)
