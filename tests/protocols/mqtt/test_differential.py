"""Differential tests against the ``mqtt-codec`` package (MQTT 3.1.1 only).

Both directions: our encoder -> its decoder, and its encoder -> our decoder;
the packets must carry the same fields. ``mqtt-codec`` 1.0.2 only builds with
setuptools < 58 (its setup.py uses ``use_2to3``)::

    printf 'setuptools<58\\n' > /tmp/c.txt
    PIP_CONSTRAINT=/tmp/c.txt PIP_BUILD_CONSTRAINT=/tmp/c.txt pip install mqtt-codec

(pip < 25 applies PIP_CONSTRAINT to build dependencies; newer pip needs
PIP_BUILD_CONSTRAINT / --build-constraint. Setting both works with either.)

Where ``mqtt-codec`` differs from the spec or from us, the strategies stay
inside the overlap: it sends no user name or password flag for an empty one,
and treats the password as text.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.protocols.mqtt.helpers import receiving_decoder
from tests.protocols.mqtt.strategies import packets_of, text
from tidelog.protocols.mqtt import (
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    connack_return_code,
    encode,
)

mc = pytest.importorskip(
    "mqtt_codec.packet",
    reason="mqtt-codec is not installed (see this module's docstring for the install recipe)",
)
mc_io = pytest.importorskip("mqtt_codec.io")

LEVEL = 4
TYPES = [t for t in PacketType if t is not PacketType.AUTH]


def _compatible_connects() -> st.SearchStrategy[Connect]:
    """CONNECTs mqtt-codec encodes faithfully: non-empty user name and UTF-8 password."""

    def fix(packet: Connect, username: str, password: str) -> Connect:
        return Connect(
            packet.client_id,
            LEVEL,
            packet.clean_start,
            packet.keep_alive,
            username or None,
            (password.encode() or None) if username else None,
            packet.will,
        )

    return st.builds(fix, packets_of(PacketType.CONNECT, LEVEL), text, text)


def _ours(packet_type: PacketType) -> st.SearchStrategy[Packet]:
    if packet_type is PacketType.CONNECT:
        return _compatible_connects()
    return packets_of(packet_type, LEVEL)


def _theirs(packet: Packet) -> Any:
    """Our packet as an mqtt-codec packet."""
    if isinstance(packet, Connect):
        will = packet.will
        return mc.MqttConnect(
            packet.client_id,
            packet.clean_start,
            packet.keep_alive,
            packet.username,
            None if packet.password is None else packet.password.decode(),
            None if will is None else mc.MqttWill(will.qos, will.topic, will.payload, will.retain),
        )
    if isinstance(packet, Connack):
        code = connack_return_code(packet.reason_code)
        assert code is not None
        return mc.MqttConnack(packet.session_present, mc.ConnackResult(code))
    if isinstance(packet, Publish):
        return mc.MqttPublish(
            packet.packet_id or 0,
            packet.topic,
            packet.payload,
            packet.dup,
            packet.qos,
            packet.retain,
        )
    if isinstance(packet, Puback | Pubrec | Pubrel | Pubcomp | Unsuback):
        cls = {
            Puback: mc.MqttPuback,
            Pubrec: mc.MqttPubrec,
            Pubrel: mc.MqttPubrel,
            Pubcomp: mc.MqttPubcomp,
            Unsuback: mc.MqttUnsuback,
        }[type(packet)]
        return cls(packet.packet_id)
    if isinstance(packet, Subscribe):
        topics = [mc.MqttTopic(s.topic_filter, s.qos) for s in packet.subscriptions]
        return mc.MqttSubscribe(packet.packet_id, topics)
    if isinstance(packet, Suback):
        results = [mc.SubscribeResult(int(code)) for code in packet.reason_codes]
        return mc.MqttSuback(packet.packet_id, results)
    if isinstance(packet, Unsubscribe):
        return mc.MqttUnsubscribe(packet.packet_id, list(packet.topic_filters))
    return {Pingreq: mc.MqttPingreq, Pingresp: mc.MqttPingresp, Disconnect: mc.MqttDisconnect}[
        type(packet)
    ]()


def _fields(theirs: Any) -> tuple[Any, ...]:
    """The fields of an mqtt-codec packet, as plain values."""
    kind = type(theirs).__name__
    if kind == "MqttConnect":
        will = theirs.will
        return (
            kind,
            theirs.client_id,
            theirs.clean_session,
            theirs.keep_alive,
            theirs.username,
            theirs.password,
            None if will is None else (will.topic, will.message, will.qos, will.retain),
        )
    if kind == "MqttConnack":
        return (kind, theirs.session_present, int(theirs.return_code))
    if kind == "MqttPublish":
        return (kind, theirs.packet_id, theirs.topic, theirs.payload, theirs.dupe, theirs.qos,
                theirs.retain)  # fmt: skip
    if kind == "MqttSubscribe":
        return (kind, theirs.packet_id, [(t.name, t.max_qos) for t in theirs.topics])
    if kind == "MqttSuback":
        return (kind, theirs.packet_id, [int(r) for r in theirs.results])
    if kind == "MqttUnsubscribe":
        return (kind, theirs.packet_id, list(theirs.topics))
    if hasattr(theirs, "packet_id"):
        return (kind, theirs.packet_id)
    return (kind,)


def _their_encode(theirs: Any) -> bytes:
    out = BytesIO()
    theirs.encode(out)
    return out.getvalue()


def _their_decode(wire: bytes) -> Any:
    _, header = mc.MqttFixedHeader.decode(mc_io.BytesReader(wire))
    cls = {
        mc.MqttControlPacketType.connect: mc.MqttConnect,
        mc.MqttControlPacketType.connack: mc.MqttConnack,
        mc.MqttControlPacketType.publish: mc.MqttPublish,
        mc.MqttControlPacketType.puback: mc.MqttPuback,
        mc.MqttControlPacketType.pubrec: mc.MqttPubrec,
        mc.MqttControlPacketType.pubrel: mc.MqttPubrel,
        mc.MqttControlPacketType.pubcomp: mc.MqttPubcomp,
        mc.MqttControlPacketType.subscribe: mc.MqttSubscribe,
        mc.MqttControlPacketType.suback: mc.MqttSuback,
        mc.MqttControlPacketType.unsubscribe: mc.MqttUnsubscribe,
        mc.MqttControlPacketType.unsuback: mc.MqttUnsuback,
        mc.MqttControlPacketType.pingreq: mc.MqttPingreq,
        mc.MqttControlPacketType.pingresp: mc.MqttPingresp,
        mc.MqttControlPacketType.disconnect: mc.MqttDisconnect,
    }[header.packet_type]
    consumed, packet = cls.decode(mc_io.BytesReader(wire))
    assert consumed == len(wire)
    return packet


@pytest.mark.parametrize("packet_type", TYPES, ids=[t.name for t in TYPES])
@given(data=st.data())
def test_our_encoder_to_their_decoder(packet_type: PacketType, data: st.DataObject) -> None:
    ours = data.draw(_ours(packet_type))
    theirs = _their_decode(encode(ours, LEVEL))
    assert _fields(theirs) == _fields(_theirs(ours))


@pytest.mark.parametrize("packet_type", TYPES, ids=[t.name for t in TYPES])
@given(data=st.data())
def test_their_encoder_to_our_decoder(packet_type: PacketType, data: st.DataObject) -> None:
    ours = data.draw(_ours(packet_type))
    wire = _their_encode(_theirs(ours))
    assert receiving_decoder(packet_type, LEVEL).feed(wire) == [ours]


@pytest.mark.parametrize("packet_type", TYPES, ids=[t.name for t in TYPES])
@given(data=st.data())
def test_same_bytes(packet_type: PacketType, data: st.DataObject) -> None:
    ours = data.draw(_ours(packet_type))
    assert encode(ours, LEVEL) == _their_encode(_theirs(ours))
