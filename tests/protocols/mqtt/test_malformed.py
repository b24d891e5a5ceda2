"""A table of bad inputs, each mapped to the reason code the spec requires,
and the reply a server sends for it (error_reply)."""

from __future__ import annotations

import pytest

from tests.protocols.mqtt.helpers import connect, packet, props, string, u16, varint
from tidelog.protocols.mqtt import (
    Decoder,
    Disconnect,
    MQTTProtocolError,
    PacketType,
    ReasonCode,
    Role,
    error_reply,
)

R = ReasonCode
MALFORMED = R.MALFORMED_PACKET
PROTOCOL = R.PROTOCOL_ERROR

# Decoder setups: a fresh server, a server after CONNECT at a level, a client.
SETUPS = {
    "server": lambda: Decoder(),
    "server3": lambda: Decoder(3),
    "server4": lambda: Decoder(4),
    "server5": lambda: Decoder(5),
    "client4": lambda: Decoder(4, role=Role.CLIENT),
    "client5": lambda: Decoder(5, role=Role.CLIENT),
    "small5": lambda: Decoder(5, max_packet_size=64),
}

WILL_FLAG = 0x04
P_SESSION_EXPIRY = b"\x11\x00\x00\x00\x0a"
P_TOPIC_ALIAS = b"\x23\x00\x01"
P_SUB_ID_0 = b"\x0b\x00"
P_SUB_ID_1 = b"\x0b\x01"
P_RECEIVE_MAX_0 = b"\x21\x00\x00"
P_USER = b"\x26" + string("k") + string("v")

# (id, setup, bytes, reason code)
CASES: list[tuple[str, str, bytes, ReasonCode]] = [
    # fixed header (§2.1)
    ("remaining-length-5-bytes", "server5", b"\x30\xff\xff\xff\xff\x01", MALFORMED),
    ("remaining-length-5-bytes-early", "server5", b"\x30\xff\xff\xff\xff", MALFORMED),
    ("remaining-length-not-shortest", "server5", b"\xc0\x80\x00", MALFORMED),
    ("packet-type-0", "server5", b"\x00\x00", MALFORMED),
    ("packet-type-15-in-3.1.1", "server4", b"\xf0\x00", MALFORMED),
    ("puback-reserved-flags", "server4", b"\x41\x02\x00\x01", MALFORMED),
    ("pubrel-reserved-flags", "server4", b"\x60\x02\x00\x01", MALFORMED),
    ("subscribe-reserved-flags", "server4", packet(0x80, u16(1), string("a"), b"\x00"), MALFORMED),
    ("unsubscribe-reserved-flags", "server4", packet(0xA0, u16(1), string("a")), MALFORMED),
    ("subscribe-dup-in-3.1.1", "server4", packet(0x8A, u16(1), string("a"), b"\x00"), MALFORMED),
    ("pingreq-reserved-flags", "server4", b"\xc1\x00", MALFORMED),
    ("publish-qos-3", "server4", packet(0x36, string("a"), u16(1)), MALFORMED),
    ("publish-qos-0-dup", "server4", packet(0x38, string("a")), MALFORMED),
    # sizes and truncation
    (
        "packet-too-large",
        "small5",
        packet(0x30, string("t"), b"\x00", b"x" * 100),
        R.PACKET_TOO_LARGE,
    ),
    ("packet-too-large-header-only", "small5", b"\x30\xc8\x01", R.PACKET_TOO_LARGE),
    ("topic-longer-than-packet", "server4", packet(0x30, u16(10), b"abc"), MALFORMED),
    ("publish-packet-id-missing", "server4", packet(0x32, string("a"), b"\x01"), MALFORMED),
    ("puback-trailing-byte-3.1.1", "server4", packet(0x40, u16(1), b"\x00"), MALFORMED),
    ("pingreq-with-body", "server4", packet(0xC0, b"\x00"), MALFORMED),
    ("disconnect-with-body-3.1.1", "server4", packet(0xE0, b"\x00"), MALFORMED),
    ("subscribe-filter-truncated", "server4", packet(0x82, u16(1), u16(9), b"ab"), MALFORMED),
    ("subscribe-options-missing", "server4", packet(0x82, u16(1), string("a")), MALFORMED),
    # strings (§1.5.4)
    ("topic-invalid-utf8", "server4", packet(0x30, string(b"\xc3\x28")), MALFORMED),
    ("topic-encoded-surrogate", "server4", packet(0x30, string(b"\xed\xa0\x80")), MALFORMED),
    ("topic-overlong-utf8", "server4", packet(0x30, string(b"\xc0\xaf")), MALFORMED),
    ("topic-contains-nul", "server4", packet(0x30, string("a\x00b")), MALFORMED),
    ("client-id-contains-nul", "server", connect(4, client_id="a\x00"), MALFORMED),
    ("filter-invalid-utf8", "server4", packet(0x82, u16(1), string(b"\xff"), b"\x00"), MALFORMED),
    (
        "user-property-invalid-utf8",
        "server5",
        packet(0x30, string("t"), props(b"\x26" + string(b"\xfe") + string("v"))),
        MALFORMED,
    ),
    # topic names and filters (§4.7)
    ("publish-topic-plus", "server4", packet(0x30, string("a/+")), R.TOPIC_NAME_INVALID),
    ("publish-topic-hash", "server4", packet(0x30, string("a/#")), R.TOPIC_NAME_INVALID),
    ("publish-topic-empty-3.1.1", "server4", packet(0x30, string("")), PROTOCOL),
    ("publish-topic-empty-no-alias", "server5", packet(0x30, string(""), b"\x00"), PROTOCOL),
    (
        "will-topic-wildcard",
        "server",
        connect(4, flags=0x02 | WILL_FLAG, rest=string("a/#") + string("x")),
        R.TOPIC_NAME_INVALID,
    ),
    (
        "will-topic-invalid-utf8",
        "server",
        connect(4, flags=0x02 | WILL_FLAG, rest=string(b"\xff") + string("x")),
        MALFORMED,
    ),
    (
        "will-topic-invalid-utf8-v5",
        "server",
        connect(5, flags=0x02 | WILL_FLAG, rest=b"\x00" + string(b"\xff") + string("x")),
        MALFORMED,
    ),
    ("user-name-invalid-utf8", "server", connect(4, flags=0x82, rest=string(b"\xc3")), MALFORMED),
    (
        "user-name-invalid-utf8-v5",
        "server",
        connect(5, flags=0x82, rest=string(b"\xed\xa0\x80")),
        MALFORMED,
    ),
    (
        "filter-hash-not-last",
        "server4",
        packet(0x82, u16(1), string("a/#/b"), b"\x00"),
        R.TOPIC_FILTER_INVALID,
    ),
    (
        "filter-plus-inside-level",
        "server4",
        packet(0x82, u16(1), string("a+"), b"\x00"),
        R.TOPIC_FILTER_INVALID,
    ),
    ("filter-empty", "server4", packet(0x82, u16(1), string(""), b"\x00"), R.TOPIC_FILTER_INVALID),
    (
        "filter-share-without-filter",
        "server5",
        packet(0x82, u16(1), b"\x00", string("$share/g"), b"\x00"),
        R.TOPIC_FILTER_INVALID,
    ),
    (
        "unsubscribe-filter-invalid",
        "server4",
        packet(0xA2, u16(1), string("#/a")),
        R.TOPIC_FILTER_INVALID,
    ),
    # SUBSCRIBE / UNSUBSCRIBE payloads (§3.8.3, §3.10.3)
    ("subscribe-empty", "server4", packet(0x82, u16(1)), PROTOCOL),
    ("subscribe-empty-v5", "server5", packet(0x82, u16(1), b"\x00"), PROTOCOL),
    ("unsubscribe-empty", "server4", packet(0xA2, u16(1)), PROTOCOL),
    ("subscribe-qos-3-3.1.1", "server4", packet(0x82, u16(1), string("a"), b"\x03"), MALFORMED),
    (
        "subscribe-reserved-bits-3.1.1",
        "server4",
        packet(0x82, u16(1), string("a"), b"\x04"),
        MALFORMED,
    ),
    (
        "subscribe-qos-3-v5",
        "server5",
        packet(0x82, u16(1), b"\x00", string("a"), b"\x03"),
        PROTOCOL,
    ),
    (
        "subscribe-reserved-bits-v5",
        "server5",
        packet(0x82, u16(1), b"\x00", string("a"), b"\x40"),
        MALFORMED,
    ),
    (
        "subscribe-retain-handling-3",
        "server5",
        packet(0x82, u16(1), b"\x00", string("a"), b"\x30"),
        PROTOCOL,
    ),
    (
        "subscribe-no-local-shared",
        "server5",
        packet(0x82, u16(1), b"\x00", string("$share/g/a"), b"\x04"),
        PROTOCOL,
    ),
    # packet identifiers (§2.2.1)
    ("puback-packet-id-0", "server4", b"\x40\x02\x00\x00", PROTOCOL),
    ("pubrel-packet-id-0", "server5", b"\x62\x02\x00\x00", PROTOCOL),
    ("publish-qos1-packet-id-0", "server4", packet(0x32, string("a"), u16(0)), PROTOCOL),
    ("subscribe-packet-id-0", "server4", packet(0x82, u16(0), string("a"), b"\x00"), PROTOCOL),
    ("unsubscribe-packet-id-0", "server4", packet(0xA2, u16(0), string("a")), PROTOCOL),
    # properties (§2.2.2)
    (
        "property-not-allowed",
        "server5",
        packet(0x30, string("t"), props(P_SESSION_EXPIRY)),
        MALFORMED,
    ),
    ("property-unknown-id", "server5", packet(0x30, string("t"), props(b"\x05\x00")), MALFORMED),
    (
        "property-multi-byte-id",
        "server5",
        packet(0x30, string("t"), props(b"\x81\x01\x00")),
        MALFORMED,
    ),
    (
        "property-duplicated",
        "server5",
        packet(0x30, string("t"), props(P_TOPIC_ALIAS, P_TOPIC_ALIAS)),
        PROTOCOL,
    ),
    (
        "subscription-id-repeated-in-subscribe",
        "server5",
        packet(0x82, u16(1), props(P_SUB_ID_1, P_SUB_ID_1), string("a"), b"\x00"),
        PROTOCOL,
    ),
    (
        "subscription-id-from-client",
        "server5",
        packet(0x30, string("t"), props(P_SUB_ID_1)),
        PROTOCOL,
    ),
    ("subscription-id-0", "client5", packet(0x30, string("t"), props(P_SUB_ID_0)), PROTOCOL),
    ("receive-maximum-0", "server", connect(5, properties=props(P_RECEIVE_MAX_0)), PROTOCOL),
    (
        "payload-format-indicator-2",
        "server5",
        packet(0x30, string("t"), props(b"\x01\x02")),
        PROTOCOL,
    ),
    (
        "response-topic-wildcard",
        "server5",
        packet(0x30, string("t"), props(b"\x08" + string("a/+"))),
        PROTOCOL,
    ),
    ("property-length-past-end", "server5", packet(0x30, string("t"), b"\x05\x01"), MALFORMED),
    ("property-value-truncated", "server5", packet(0x30, string("t"), b"\x02\x23\x00"), MALFORMED),
    (
        "will-property-not-allowed",
        "server",
        connect(5, flags=0x02 | WILL_FLAG, rest=props(P_TOPIC_ALIAS) + string("w") + string("x")),
        MALFORMED,
    ),
    (
        "auth-data-without-method",
        "server",
        connect(5, properties=props(b"\x16" + string("d"))),
        PROTOCOL,
    ),
    ("puback-reason-code-not-allowed", "server5", packet(0x40, u16(1), b"\x04"), MALFORMED),
    ("disconnect-reason-code-not-allowed", "server5", packet(0xE0, b"\x01"), MALFORMED),
    # CONNECT (§3.1)
    ("first-packet-not-connect", "server", packet(0x30, string("a")), PROTOCOL),
    ("second-connect", "server4", connect(4), PROTOCOL),
    ("connect-reserved-flag", "server", connect(4, flags=0x03), MALFORMED),
    (
        "connect-will-qos-3",
        "server",
        connect(4, flags=0x02 | WILL_FLAG | 0x18, rest=string("w") + string("x")),
        MALFORMED,
    ),
    ("connect-will-retain-without-will", "server", connect(4, flags=0x22), MALFORMED),
    ("connect-will-qos-without-will", "server", connect(4, flags=0x0A), MALFORMED),
    (
        "connect-password-without-username-3.1.1",
        "server",
        connect(4, flags=0x42, rest=string("pw")),
        MALFORMED,
    ),
    ("connect-trailing-bytes", "server", connect(4, rest=b"\x00"), MALFORMED),
    ("connect-protocol-level-6", "server", connect(6, name="MQTT"), R.UNSUPPORTED_PROTOCOL_VERSION),
    (
        "connect-mqtt-name-level-3",
        "server",
        connect(3, name="MQTT"),
        R.UNSUPPORTED_PROTOCOL_VERSION,
    ),
    (
        "connect-mqisdp-name-level-4",
        "server",
        connect(4, name="MQIsdp"),
        R.UNSUPPORTED_PROTOCOL_VERSION,
    ),
    (
        "connect-bridge-bit-on-mqtt5",  # 0x83/0x84 (3.x with the bridge bit) are accepted
        "server",
        connect(0x85, name="MQTT"),
        R.UNSUPPORTED_PROTOCOL_VERSION,
    ),
    (
        "connect-3.1-client-id-24",
        "server",
        connect(3, client_id="x" * 24),
        R.CLIENT_IDENTIFIER_NOT_VALID,
    ),
    (
        "connect-3.1-client-id-empty",
        "server",
        connect(3, client_id=""),
        R.CLIENT_IDENTIFIER_NOT_VALID,
    ),
    (
        "connect-3.1.1-empty-client-id-persistent",
        "server",
        connect(4, flags=0, client_id=""),
        R.CLIENT_IDENTIFIER_NOT_VALID,
    ),
    # direction and level
    ("server-receives-connack", "server4", b"\x20\x02\x00\x00", PROTOCOL),
    ("server-receives-suback", "server5", packet(0x90, u16(1), b"\x00", b"\x00"), PROTOCOL),
    ("client-receives-subscribe", "client4", packet(0x82, u16(1), string("a"), b"\x00"), PROTOCOL),
    ("client-receives-connect", "client5", connect(5), PROTOCOL),
    ("client-3.1.1-receives-disconnect", "client4", b"\xe0\x00", PROTOCOL),
    ("client-3.1.1-receives-auth", "client4", b"\xf0\x00", MALFORMED),
    # server-to-client packets
    ("connack-reserved-ack-flags", "client4", b"\x20\x02\x02\x00", MALFORMED),
    ("connack-return-code-6", "client4", b"\x20\x02\x00\x06", MALFORMED),
    ("connack-v5-reason-not-allowed", "client5", b"\x20\x03\x00\x04\x00", MALFORMED),
    ("connack-v5-without-properties", "client5", b"\x20\x02\x00\x00", MALFORMED),
    ("connack-session-present-on-refusal", "client4", b"\x20\x02\x01\x05", PROTOCOL),
    ("suback-return-code-3-3.1.1", "client4", packet(0x90, u16(1), b"\x03"), MALFORMED),
    ("suback-empty", "client4", packet(0x90, u16(1)), PROTOCOL),
    ("unsuback-v5-without-reason-codes", "client5", packet(0xB0, u16(1), b"\x00"), PROTOCOL),
]


@pytest.mark.parametrize(
    ("setup", "data", "reason_code"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_raises_with_reason_code(setup: str, data: bytes, reason_code: int) -> None:
    decoder = SETUPS[setup]()
    with pytest.raises(MQTTProtocolError) as info:
        decoder.feed(data)
    assert info.value.reason_code == reason_code, info.value
    # The decoder stays failed: MQTT closes the connection after an error.
    with pytest.raises(MQTTProtocolError) as again:
        decoder.feed(b"")
    assert again.value.reason_code == reason_code


@pytest.mark.parametrize(
    ("setup", "data", "reason_code"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_fails_the_same_when_fed_byte_by_byte(
    setup: str, data: bytes, reason_code: int
) -> None:
    decoder = SETUPS[setup]()
    with pytest.raises(MQTTProtocolError) as info:
        for index in range(len(data)):
            decoder.feed(data[index : index + 1])
    assert info.value.reason_code == reason_code


def test_valid_packets_before_the_bad_one_are_kept() -> None:
    good = packet(0x30, string("a"), b"payload") + b"\xc0\x00"
    decoder = Decoder(4)
    with pytest.raises(MQTTProtocolError) as info:
        decoder.feed(good + packet(0x30, string("a/#")))
    assert [type(p).__name__ for p in info.value.packets] == ["Publish", "Pingreq"]
    assert info.value.packet_type is PacketType.PUBLISH
    assert info.value.protocol_level == 4


def test_oversized_packet_fails_before_its_body_arrives() -> None:
    decoder = Decoder(5, max_packet_size=1000)
    with pytest.raises(MQTTProtocolError) as info:
        decoder.feed(b"\x30" + varint(10_000))
    assert info.value.reason_code == R.PACKET_TOO_LARGE
    assert decoder.buffered == 0


# -- what a server sends back -------------------------------------------------


def _reply(setup: str, data: bytes) -> bytes:
    with pytest.raises(MQTTProtocolError) as info:
        SETUPS[setup]().feed(data)
    return error_reply(info.value, reason_string=False)


@pytest.mark.parametrize(
    ("setup", "data", "reply"),
    [
        # unsupported levels: a 3.1.1 CONNACK (return code 1) below 5, a v5 one from 5 up
        ("server", connect(3, name="MQTT"), b"\x20\x02\x00\x01"),
        ("server", connect(4, name="MQIsdp"), b"\x20\x02\x00\x01"),
        ("server", connect(6, name="MQTT"), b"\x20\x03\x00\x84\x00"),
        # identifier rejected (3.x return code 2, v5 has no such rule here)
        ("server", connect(3, client_id="x" * 24), b"\x20\x02\x00\x02"),
        ("server", connect(4, flags=0, client_id=""), b"\x20\x02\x00\x02"),
        # malformed CONNECT: v5 CONNACK 0x81, 3.x just closes
        ("server", connect(5, flags=0x03), b"\x20\x03\x00\x81\x00"),
        ("server", connect(4, flags=0x03), b""),
        # before the level is known there is nothing the client could read
        ("server", b"\x10\xff\xff\xff\xff", b""),
        ("server", packet(0x30, string("a")), b""),
        # after CONNECT: v5 DISCONNECT with the reason code, 3.x closes
        ("server5", packet(0x30, string("a/#"), b"\x00"), b"\xe0\x02\x90\x00"),
        ("server5", b"\x41\x02\x00\x01", b"\xe0\x02\x81\x00"),
        ("small5", b"\x30\xc8\x01", b"\xe0\x02\x95\x00"),
        ("server4", packet(0x30, string("a/#")), b""),
        ("client5", b"\x20\x02\x00\x00", b"\xe0\x02\x81\x00"),
    ],
)
def test_error_reply(setup: str, data: bytes, reply: bytes) -> None:
    assert _reply(setup, data) == reply


def test_error_reply_falls_back_to_protocol_error() -> None:
    # A reason code DISCONNECT cannot carry becomes Protocol Error.
    error = MQTTProtocolError(
        "x", R.CLIENT_IDENTIFIER_NOT_VALID, packet_type=PacketType.PUBLISH, protocol_level=5
    )
    assert error_reply(error, reason_string=False) == b"\xe0\x02\x82\x00"


def test_error_reply_carries_the_message_as_reason_string() -> None:
    with pytest.raises(MQTTProtocolError) as info:
        Decoder(5).feed(packet(0x30, string("a/#"), b"\x00"))
    reply = error_reply(info.value)
    assert reply[0] == 0xE0 and reply[2] == 0x90
    assert b"wildcards" in reply
    [disconnect] = Decoder(5, role=Role.CLIENT).feed(reply)
    assert isinstance(disconnect, Disconnect) and disconnect.properties.reason_string
