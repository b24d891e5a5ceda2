"""Decode/encode rate of the MQTT codec for 100-byte QoS 1 PUBLISH packets.

    python bench/codec.py [--packets N] [--level 4|5] [--repeat R]

Packets are encoded into one buffer and fed to a server-side Decoder in
socket-sized reads (64 KiB), the way a connection handler would. Prints the
best of R runs as packets per second, for decoding, for encode_many, and for
PUBACK decoding (the acks a server receives from subscribers).

Times are CPU time of this process (time.process_time), so that other load on
the machine does not count; the codec does no I/O, so CPU time is its cost.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tidelog.protocols.mqtt import (
    Decoder,
    Puback,
    Publish,
    Role,
    encode,
    encode_many,
)

READ_SIZE = 65_536


def _publishes(count: int, level: int) -> list[Publish]:
    topic = "sensors/building-7/floor-3/temperature"
    sample = Publish(topic, b"", qos=1, packet_id=1)
    overhead = len(encode(sample, level))
    payload = b"x" * (100 - overhead)
    packets = [Publish(topic, payload, qos=1, packet_id=i % 65_535 + 1) for i in range(count)]
    assert len(encode(packets[0], level)) == 100
    return packets


def _decode_rate(data: bytes, count: int, level: int, role: Role) -> float:
    decoder = Decoder(level, role=role)
    view = memoryview(data)
    decoded = 0
    started = time.process_time()
    for offset in range(0, len(data), READ_SIZE):
        decoded += len(decoder.feed(view[offset : offset + READ_SIZE]))
    elapsed = time.process_time() - started
    assert decoded == count, (decoded, count)
    return count / elapsed


def _encode_rate(packets: list[Publish], level: int) -> float:
    started = time.process_time()
    for offset in range(0, len(packets), 500):
        encode_many(packets[offset : offset + 500], level)
    return len(packets) / (time.process_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--level", type=int, default=5, choices=(3, 4, 5))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    packets = _publishes(args.packets, args.level)
    data = encode_many(packets, args.level)
    acks = encode_many([Puback(i % 65_535 + 1) for i in range(args.packets)], args.level)
    best_decode = max(
        _decode_rate(data, args.packets, args.level, Role.SERVER) for _ in range(args.repeat)
    )
    best_encode = max(_encode_rate(packets, args.level) for _ in range(args.repeat))
    best_ack = max(
        _decode_rate(acks, args.packets, args.level, Role.SERVER) for _ in range(args.repeat)
    )
    print(
        f"python {platform.python_version()} · MQTT level {args.level} · "
        f"{args.packets} packets · best of {args.repeat}"
    )
    print(f"decode 100-byte QoS1 PUBLISH: {best_decode:>12,.0f} packets/s")
    print(f"encode 100-byte QoS1 PUBLISH: {best_encode:>12,.0f} packets/s (encode_many, 500/batch)")
    print(f"decode PUBACK:                {best_ack:>12,.0f} packets/s")


if __name__ == "__main__":
    main()
