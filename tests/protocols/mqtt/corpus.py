"""Valid MQTT of every packet type and protocol level, encoded by tidelog's codec:
the seed corpus of the fuzzers (``tests/protocols/mqtt/fuzz_targets.py``,
``tests/crash/live_fuzz.py``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tidelog.protocols.mqtt import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Properties,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
    encode_many,
)

LEVELS = (3, 4, 5)


def client_packets(level: int) -> list[Packet]:
    """One of every packet a client sends (after its CONNECT)."""
    v5 = level == 5
    props = Properties(user_properties=(("k", "v"),), content_type="text/plain") if v5 else None
    extra = {"properties": props} if props else {}
    return [
        Publish("a/b", b"hello", 0),
        Publish("a/b", b"x" * 40, 1, packet_id=1, **extra),
        Publish("a/c", b"", 2, True, packet_id=2),
        Publish("a/c", b"resent", 2, False, True, packet_id=2),
        Puback(7),
        Pubrec(8),
        Pubrel(8),
        Pubcomp(9),
        Subscribe(3, [Subscription("a/#", 1), Subscription("+/b", 2)]),
        Subscribe(4, [Subscription("$share/g/a/+", 1)]),
        Subscribe(5, [Subscription("$replay/earliest/a/#", 1)]),
        Unsubscribe(6, ["a/#", "nothing"]),
        Pingreq(),
        Disconnect(),
    ]


def connects(level: int) -> list[Connect]:
    v5 = level == 5
    return [
        Connect("fuzz", protocol_level=level),
        Connect("fuzz-p", protocol_level=level, clean_start=False, keep_alive=30),
        Connect(
            "fuzz-w",
            protocol_level=level,
            username="u",
            password=b"p",
            will=Will("will/t", b"gone", 1, True),
            properties=Properties(session_expiry_interval=60, receive_maximum=10)
            if v5
            else Properties(),
        ),
    ]


def server_packets(level: int) -> list[Packet]:
    return [
        Connack(),
        Publish("a/b", b"hello", 1, packet_id=1),
        Puback(1),
        Pubrec(2),
        Pubrel(2),
        Pubcomp(2),
        Suback(3, [0, 1, 2]),
        Unsuback(4, [0] if level == 5 else []),
    ]


def seed_corpus() -> list[bytes]:
    """Inputs for both targets: a selector byte, then packets."""
    seeds = []
    for level in LEVELS:
        packets = client_packets(level)
        for connect in connects(level):
            session = encode(connect, level) + encode_many(packets, level)
            seeds.append(bytes([0]) + session)  # the server decoder learning the level
        seeds.append(bytes([LEVELS.index(level) + 1]) + encode_many(packets, level))
        seeds.append(bytes([LEVELS.index(level) + 4]) + encode_many(server_packets(level), level))
        for packet in packets:  # single packets too: small inputs mutate faster
            seeds.append(bytes([0]) + encode(connects(level)[0], level) + encode(packet, level))
    return seeds


def write_corpus(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    seeds = seed_corpus()
    for seed in seeds:
        (directory / f"seed-{hashlib.sha1(seed).hexdigest()[:16]}").write_bytes(seed)
    return len(seeds)
