"""Decoder and encoder behaviour beyond round trips: levels, roles, buffering,
what encoding at 3.x leaves out, size limits."""

from __future__ import annotations

import attrs
import pytest

from tests.protocols.mqtt.helpers import connect, packet, string, u16
from tidelog.protocols.mqtt import (
    NO_PROPERTIES,
    Auth,
    Connack,
    Connect,
    Decoder,
    Disconnect,
    MQTTProtocolError,
    Pingreq,
    Properties,
    Puback,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Role,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
    encode_many,
)


class TestDecoderLevels:
    def test_connect_sets_the_level_for_the_rest_of_the_same_read(self) -> None:
        publish = Publish("t", b"x", 1, packet_id=3, properties=Properties(topic_alias=1))
        wire = encode(Connect("c", 5), 5) + encode(publish, 5)
        decoder = Decoder()
        assert decoder.protocol_level is None
        assert decoder.feed(wire) == [Connect("c", 5), publish]
        assert decoder.protocol_level == 5

    @pytest.mark.parametrize("level", [3, 4, 5])
    def test_connect_of_each_level(self, level: int) -> None:
        decoder = Decoder()
        [packet_] = decoder.feed(encode(Connect("client", level), level))
        assert isinstance(packet_, Connect)
        assert packet_.protocol_name == ("MQIsdp" if level == 3 else "MQTT")
        assert decoder.protocol_level == level

    def test_mqtt_3_1_accepts_dup_on_resent_subscribe_unsubscribe_pubrel(self) -> None:
        decoder = Decoder(3)
        wire = (
            packet(0x8A, u16(1), string("a"), b"\x01")
            + packet(0xAA, u16(2), string("a"))
            + packet(0x6A, u16(3))
        )
        assert decoder.feed(wire) == [
            Subscribe(1, [Subscription("a", 1)]),
            Unsubscribe(2, ["a"]),
            Pubrel(3),
        ]

    def test_mqtt_3_1_connack_has_no_session_present(self) -> None:
        decoder = Decoder(3, role=Role.CLIENT)
        assert decoder.feed(b"\x20\x02\x01\x00") == [Connack(ReasonCode.SUCCESS, False)]
        with pytest.raises(MQTTProtocolError):
            encode(Connack(session_present=True), 3)

    def test_mqtt_3_1_client_id_of_23_characters(self) -> None:
        [packet_] = Decoder().feed(connect(3, client_id="x" * 23))
        assert isinstance(packet_, Connect) and packet_.client_id == "x" * 23

    def test_mqtt_3_1_1_empty_client_id_with_clean_session(self) -> None:
        [packet_] = Decoder().feed(connect(4, flags=0x02, client_id=""))
        assert isinstance(packet_, Connect) and packet_.client_id == ""

    def test_mqtt_5_password_without_user_name(self) -> None:
        wire = encode(Connect("c", 5, password=b"secret"), 5)
        assert Decoder().feed(wire) == [Connect("c", 5, password=b"secret")]

    def test_constructor_arguments(self) -> None:
        with pytest.raises(ValueError):
            Decoder(role=Role.CLIENT)
        with pytest.raises(ValueError):
            Decoder(6)
        with pytest.raises(ValueError):
            Decoder(4, max_packet_size=1)


class TestDecoderBuffering:
    def test_partial_packet_is_buffered(self) -> None:
        wire = encode(Publish("a/b", b"x" * 300, 1, packet_id=1), 4)
        decoder = Decoder(4)
        assert decoder.feed(wire[:1]) == []
        assert decoder.feed(wire[1:3]) == []
        assert decoder.feed(wire[3:100]) == []
        assert decoder.buffered == 100
        assert decoder.feed(wire[100:]) == [Publish("a/b", b"x" * 300, 1, packet_id=1)]
        assert decoder.buffered == 0

    def test_large_packet_in_many_small_reads(self) -> None:
        publish = Publish("big", bytes(range(256)) * 4096, 2, packet_id=9)
        wire = encode(publish, 5) + encode(Pingreq(), 5)
        decoder = Decoder(5)
        received = []
        for offset in range(0, len(wire), 1000):
            received.extend(decoder.feed(wire[offset : offset + 1000]))
        assert received == [publish, Pingreq()]

    def test_accepts_bytearray_and_memoryview(self) -> None:
        wire = encode_many([Pingreq(), Puback(5)], 4)
        decoder = Decoder(4)
        assert decoder.feed(bytearray(wire[:3])) == [Pingreq()]
        assert decoder.feed(memoryview(wire)[3:]) == [Puback(5)]

    @pytest.mark.parametrize("size", [125, 126, 127, 128, 16_381, 16_383, 16_384, 2_097_152])
    def test_remaining_length_boundaries(self, size: int) -> None:
        publish = Publish("t", b"p" * (size - 3))  # 2 + 1 topic bytes + payload
        wire = encode(publish, 4)
        assert len(wire) - size in (2, 3, 4, 5)
        decoder = Decoder(4)
        assert decoder.feed(wire[:-1]) == []
        assert decoder.feed(wire[-1:]) == [publish]

    def test_packet_exactly_at_the_maximum_size(self) -> None:
        publish = Publish("t", b"p" * 57)  # 2 + 2 + 1 + 57 + 1 (v5 property length)
        wire = encode(publish, 5)
        assert len(wire) == 63
        assert Decoder(5, max_packet_size=63).feed(wire) == [publish]
        with pytest.raises(MQTTProtocolError) as info:
            Decoder(5, max_packet_size=62).feed(wire)
        assert info.value.reason_code == ReasonCode.PACKET_TOO_LARGE

    def test_v5_short_forms_of_acks_and_disconnect(self) -> None:
        decoder = Decoder(5)
        wire = (
            b"\x40\x02\x00\x01"  # PUBACK, success implied
            + b"\x50\x03\x00\x02\x10"  # PUBREC with reason code, no properties
            + b"\xe0\x01\x04"  # DISCONNECT with will, no properties
        )
        assert decoder.feed(wire) == [
            Puback(1),
            Pubrec(2, ReasonCode.NO_MATCHING_SUBSCRIBERS),
            Disconnect(ReasonCode.DISCONNECT_WITH_WILL_MESSAGE),
        ]

    def test_decoded_empty_properties_are_the_shared_instance(self) -> None:
        [publish] = Decoder(5).feed(encode(Publish("t", b"", 1, packet_id=1), 5))
        assert isinstance(publish, Publish) and publish.properties is NO_PROPERTIES


class TestEncodeForOlderLevels:
    def test_v5_parts_are_left_out_at_3_x(self) -> None:
        props = Properties(user_properties=[("k", "v")], message_expiry_interval=5)
        publish = Publish("t", b"x", 1, packet_id=4, properties=props)
        assert Decoder(4).feed(encode(publish, 4)) == [
            attrs.evolve(publish, properties=NO_PROPERTIES)
        ]
        ack = Puback(4, ReasonCode.NOT_AUTHORIZED, Properties(reason_string="no"))
        assert encode(ack, 4) == b"\x40\x02\x00\x04"
        sub = Subscription("a/+", 2, no_local=True, retain_as_published=True, retain_handling=2)
        assert encode(Subscribe(7, [sub]), 4) == packet(0x82, u16(7), string("a/+"), b"\x02")
        assert encode(Unsuback(3, [ReasonCode.NO_SUBSCRIPTION_EXISTED]), 4) == b"\xb0\x02\x00\x03"
        assert encode(Disconnect(ReasonCode.SERVER_SHUTTING_DOWN), 4) == b"\xe0\x00"

    def test_suback_failures_become_0x80(self) -> None:
        suback = Suback(1, [ReasonCode.GRANTED_QOS_1, ReasonCode.TOPIC_FILTER_INVALID])
        assert encode(suback, 4) == packet(0x90, u16(1), b"\x01\x80")

    @pytest.mark.parametrize(
        ("reason_code", "return_code"),
        [
            (ReasonCode.SUCCESS, 0),
            (ReasonCode.UNSUPPORTED_PROTOCOL_VERSION, 1),
            (ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, 2),
            (ReasonCode.SERVER_BUSY, 3),
            (ReasonCode.BAD_USER_NAME_OR_PASSWORD, 4),
            (ReasonCode.BANNED, 5),
        ],
    )
    def test_connack_maps_reason_codes(self, reason_code: ReasonCode, return_code: int) -> None:
        assert encode(Connack(reason_code), 4) == bytes((0x20, 2, 0, return_code))

    def test_connack_without_a_3_x_return_code_refuses(self) -> None:
        with pytest.raises(MQTTProtocolError):
            encode(Connack(ReasonCode.PACKET_TOO_LARGE), 4)

    def test_auth_does_not_exist_before_5(self) -> None:
        with pytest.raises(MQTTProtocolError):
            encode(Auth(), 4)

    def test_topic_alias_only_publish_needs_5(self) -> None:
        publish = Publish("", b"x", properties=Properties(topic_alias=3))
        assert Decoder(5).feed(encode(publish, 5)) == [publish]
        with pytest.raises(MQTTProtocolError):
            encode(publish, 4)

    def test_connect_is_encoded_at_its_own_level(self) -> None:
        with pytest.raises(MQTTProtocolError):
            encode(Connect("c", 5), 4)
        with pytest.raises(ValueError):
            encode(Pingreq(), 7)


class TestLocalValidation:
    """Packets refuse to be built wrong, with the reason code a receiver would use."""

    @pytest.mark.parametrize(
        ("build", "reason_code"),
        [
            (lambda: Publish("a/+"), ReasonCode.TOPIC_NAME_INVALID),
            (lambda: Publish("a", qos=3, packet_id=1), ReasonCode.MALFORMED_PACKET),
            (lambda: Publish("a", qos=1), ReasonCode.PROTOCOL_ERROR),
            (lambda: Publish("a", qos=0, packet_id=1), ReasonCode.PROTOCOL_ERROR),
            (lambda: Publish("a", dup=True), ReasonCode.MALFORMED_PACKET),
            (lambda: Publish(""), ReasonCode.PROTOCOL_ERROR),
            (lambda: Puback(0), ReasonCode.PROTOCOL_ERROR),
            (lambda: Puback(70_000), ReasonCode.PROTOCOL_ERROR),
            (lambda: Puback(None), ReasonCode.PROTOCOL_ERROR),  # type: ignore[arg-type]
            (lambda: Puback(1, ReasonCode.BANNED), ReasonCode.MALFORMED_PACKET),
            (lambda: Subscribe(1, []), ReasonCode.PROTOCOL_ERROR),
            (lambda: Subscription("a/#/b"), ReasonCode.TOPIC_FILTER_INVALID),
            (lambda: Subscription("a", qos=3), ReasonCode.PROTOCOL_ERROR),
            (lambda: Unsubscribe(1, []), ReasonCode.PROTOCOL_ERROR),
            (lambda: Suback(1, [0x03]), ReasonCode.MALFORMED_PACKET),
            (lambda: Connack(ReasonCode.NOT_AUTHORIZED, True), ReasonCode.PROTOCOL_ERROR),
            (lambda: Connect("c", 6), ReasonCode.UNSUPPORTED_PROTOCOL_VERSION),
            (lambda: Connect("c", 4, password=b"p"), ReasonCode.MALFORMED_PACKET),
            (lambda: Will("a/#"), ReasonCode.TOPIC_NAME_INVALID),
            (lambda: Will("a", qos=3), ReasonCode.MALFORMED_PACKET),
            (lambda: Disconnect(ReasonCode.BANNED), ReasonCode.MALFORMED_PACKET),
        ],
    )
    def test_invalid_packets(self, build: object, reason_code: ReasonCode) -> None:
        with pytest.raises(MQTTProtocolError) as info:
            build()  # type: ignore[operator]
        assert info.value.reason_code == reason_code

    def test_error_is_a_tidelog_error_and_a_value_error(self) -> None:
        from tidelog.errors import TidelogError

        with pytest.raises(TidelogError):
            Puback(0)
        with pytest.raises(ValueError):
            Puback(0)

    def test_string_limits_are_checked_when_encoding(self) -> None:
        assert encode(Publish("t" * 65_535), 4)
        with pytest.raises(MQTTProtocolError):
            encode(Publish("t" * 65_536), 4)
        with pytest.raises(MQTTProtocolError):
            encode(Publish("\ud800"), 4)
        with pytest.raises(MQTTProtocolError):
            encode(Connect("x" * 65_536), 4)

    def test_property_value_out_of_range_when_encoding(self) -> None:
        with pytest.raises(MQTTProtocolError):
            encode(Publish("t", properties=Properties(topic_alias=70_000)), 5)
        with pytest.raises(MQTTProtocolError):
            encode(Publish("t", properties=Properties(payload_format_indicator=2)), 5)

    def test_packets_compare_by_type_and_value(self) -> None:
        assert Puback(1) == Puback(1)
        other: object = Pubrec(1)
        assert Puback(1) != other
        assert Subscribe(1, [Subscription("a")]) == Subscribe(1, (Subscription("a"),))
