"""Write the version 1 logs that test_integrity.py reads (run with the OLD code).

The archives beside this file were made by the record format version 1 encoder
(tidelog at commit 6718343, before issue 17) with::

    cd <a checkout of 6718343> && python <this file> <output directory>

Each holds the same events (see ``EVENTS``): plain ones on two topics, one
retained, one with every MQTT 5 property, at two timestamps; and a cursor.
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

import trio

from tidelog.storage import CursorState, NewEvent, Properties, open_log

EVENTS = [
    NewEvent("v1/a", b"first"),
    NewEvent("v1/b", b"second", qos=1),
    NewEvent("v1/a", b"third", qos=2, retain=True),
    NewEvent(
        "v1/props",
        b"\x00\x01binary",
        qos=1,
        properties=Properties(
            payload_format=0,
            message_expiry=3600,
            content_type="application/octet-stream",
            response_topic="v1/reply",
            correlation_data=b"\x01\x02",
            user_properties=(("k", "v"), ("k", "w")),
        ),
    ),
]
"""Appended in two batches: the first two at T, the other two at T + 1000."""
T = 1_700_000_000_000


async def write(url: str) -> None:
    now = [T]
    async with open_log(url, clock=lambda: now[0]) as log:
        await log.append(EVENTS[:2])
        now[0] = T + 1000
        await log.append(EVENTS[2:])
        await log.commit_cursors([CursorState("reader", 3, {"note": "v1"})])


def main(out: Path) -> None:
    for name, url_of in (("lmdb", "lmdb://{}/data"), ("sqlite", "sqlite://{}/data/log.db")):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "data").mkdir()
            trio.run(write, url_of.format(tmp))
            with tarfile.open(out / f"v1-{name}.tar.gz", "w:gz") as archive:
                archive.add(Path(tmp) / "data", arcname="data")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
