"""The reason-code and property tables against the spec's tables."""

from __future__ import annotations

import attrs
import pytest

from tidelog.protocols.mqtt import (
    NO_PROPERTIES,
    PROPERTY_SPECS,
    REASON_CODE_NAMES,
    WILL,
    ConnackReturnCode,
    MQTTProtocolError,
    PacketType,
    Properties,
    PropertyId,
    ReasonCode,
    connack_return_code,
    reason_code_name,
)
from tidelog.protocols.mqtt.properties import decode_properties, encode_properties
from tidelog.protocols.mqtt.reason_codes import V3_TO_V5_CONNACK, V5_TO_V3_CONNACK


class TestReasonCodes:
    @pytest.mark.parametrize(
        ("code", "packet_type", "name"),
        [
            (0x00, PacketType.CONNACK, "Success"),
            (0x00, PacketType.DISCONNECT, "Normal disconnection"),
            (0x00, PacketType.SUBACK, "Granted QoS 0"),
            (0x02, PacketType.SUBACK, "Granted QoS 2"),
            (0x8E, PacketType.DISCONNECT, "Session taken over"),
            (0x92, PacketType.PUBREL, "Packet Identifier not found"),
            (0x18, PacketType.AUTH, "Continue authentication"),
        ],
    )
    def test_names_per_packet_type(self, code: int, packet_type: PacketType, name: str) -> None:
        assert reason_code_name(code, packet_type) == name

    def test_code_not_valid_for_a_packet(self) -> None:
        assert "not valid" in reason_code_name(0x8E, PacketType.PUBACK)

    def test_every_code_is_used_by_some_packet(self) -> None:
        used = {code for names in REASON_CODE_NAMES.values() for code in names}
        assert used == set(ReasonCode)

    def test_packets_with_reason_codes(self) -> None:
        assert set(REASON_CODE_NAMES) == {
            PacketType.CONNACK,
            PacketType.PUBACK,
            PacketType.PUBREC,
            PacketType.PUBREL,
            PacketType.PUBCOMP,
            PacketType.SUBACK,
            PacketType.UNSUBACK,
            PacketType.DISCONNECT,
            PacketType.AUTH,
        }

    def test_connack_return_code_mapping_round_trips(self) -> None:
        for return_code, reason in V3_TO_V5_CONNACK.items():
            assert V5_TO_V3_CONNACK[reason] == return_code
        assert set(V3_TO_V5_CONNACK) == set(ConnackReturnCode)
        assert connack_return_code(ReasonCode.MALFORMED_PACKET) is None
        assert connack_return_code(ReasonCode.NOT_AUTHORIZED) is ConnackReturnCode.NOT_AUTHORIZED
        # every mapped code may be sent in a CONNACK
        assert all(code in REASON_CODE_NAMES[PacketType.CONNACK] for code in V5_TO_V3_CONNACK)


class TestPropertyTable:
    def test_every_identifier_has_a_row_and_a_field(self) -> None:
        assert set(PROPERTY_SPECS) == set(PropertyId)
        fields = {field.name for field in attrs.fields(Properties)}
        assert {spec.name for spec in PROPERTY_SPECS.values()} == fields

    def test_repetition_rules(self) -> None:
        user = PROPERTY_SPECS[PropertyId.USER_PROPERTY]
        assert user.repeatable_in == user.contexts
        sub_id = PROPERTY_SPECS[PropertyId.SUBSCRIPTION_IDENTIFIER]
        assert sub_id.contexts == {PacketType.PUBLISH, PacketType.SUBSCRIBE}
        assert sub_id.repeatable_in == {PacketType.PUBLISH}
        others = set(PropertyId) - {PropertyId.USER_PROPERTY, PropertyId.SUBSCRIPTION_IDENTIFIER}
        assert not any(PROPERTY_SPECS[ident].repeatable for ident in others)

    @pytest.mark.parametrize(
        ("ident", "contexts"),
        [
            (PropertyId.PAYLOAD_FORMAT_INDICATOR, {PacketType.PUBLISH, WILL}),
            (PropertyId.WILL_DELAY_INTERVAL, {WILL}),
            (PropertyId.TOPIC_ALIAS, {PacketType.PUBLISH}),
            (
                PropertyId.SESSION_EXPIRY_INTERVAL,
                {PacketType.CONNECT, PacketType.CONNACK, PacketType.DISCONNECT},
            ),
            (PropertyId.SERVER_REFERENCE, {PacketType.CONNACK, PacketType.DISCONNECT}),
            (
                PropertyId.AUTHENTICATION_METHOD,
                {PacketType.CONNECT, PacketType.CONNACK, PacketType.AUTH},
            ),
        ],
    )
    def test_allowed_packets(self, ident: PropertyId, contexts: set[int]) -> None:
        assert PROPERTY_SPECS[ident].contexts == contexts

    def test_user_properties_keep_order_and_repeat(self) -> None:
        props = Properties(user_properties=[("a", "1"), ("a", "2"), ("b", "")])
        wire = encode_properties(props, PacketType.PUBACK)
        decoded, end = decode_properties(wire, 0, len(wire), PacketType.PUBACK)
        assert decoded == props and end == len(wire)

    def test_encoding_refuses_a_property_the_packet_cannot_carry(self) -> None:
        with pytest.raises(MQTTProtocolError) as info:
            encode_properties(Properties(topic_alias=1), PacketType.CONNECT)
        assert info.value.reason_code == ReasonCode.MALFORMED_PACKET

    def test_encoding_refuses_repeated_subscription_identifier_in_subscribe(self) -> None:
        with pytest.raises(MQTTProtocolError) as info:
            encode_properties(Properties(subscription_identifiers=[1, 2]), PacketType.SUBSCRIBE)
        assert info.value.reason_code == ReasonCode.PROTOCOL_ERROR
        assert encode_properties(Properties(subscription_identifiers=[1, 2]), PacketType.PUBLISH)

    def test_empty_block(self) -> None:
        assert encode_properties(NO_PROPERTIES, PacketType.PUBLISH) == b"\x00"
        assert encode_properties(Properties(), PacketType.PUBLISH) == b"\x00"

    def test_repr_shows_only_present_properties(self) -> None:
        assert repr(Properties(topic_alias=2)) == "Properties(topic_alias=2)"
