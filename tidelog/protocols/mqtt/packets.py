"""The MQTT control packets as immutable values (§3; 3.1.1 §3; 3.1 §3).

One class per packet type, the same classes at every protocol level. Fields
that exist only in MQTT 5 (reason codes of acks, properties, subscription
options but the QoS) have defaults; encoding at level 3 or 4 leaves them out,
so a server builds one packet and encodes it for each client's level. The
exception is CONNACK: its v5 reason code is mapped to the 3.x return code, and
a code 3.x cannot express is refused (see :mod:`.reason_codes`).

Packets are slotted attrs classes compared by value. They are not frozen:
a frozen attrs class costs four times as much to build, and the decoder builds
one per PUBLISH. Treat them as immutable all the same -- the codec never
changes a packet, and one decoded PUBLISH may be encoded for many subscribers
(``attrs.evolve`` makes a changed copy). The values inside them
(:class:`Properties`, :class:`Will`, :class:`Subscription`) are frozen.

Constructors check what is cheap and always true whatever the level: QoS
values, packet identifiers, topic names and filters, reason codes allowed for
the packet. Violations raise :class:`MQTTProtocolError` with the reason code a
receiver would answer with, because the decoder builds packets with these very
constructors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar, TypeAlias

import attrs

from tidelog.errors import InvalidTopicError
from tidelog.protocols.mqtt.errors import (
    MQTTProtocolError,
    UnsupportedProtocolVersionError,
    malformed,
    protocol_error,
)
from tidelog.protocols.mqtt.properties import NO_PROPERTIES, Properties
from tidelog.protocols.mqtt.protocol import (
    MAX_PACKET_ID,
    PROTOCOL_NAMES,
    PacketType,
    ProtocolLevel,
)
from tidelog.protocols.mqtt.reason_codes import REASON_CODES_BY_PACKET, ReasonCode
from tidelog.topics import SHARED_PREFIX, parse_shared, validate_topic_name


def _check_packet_id(packet_id: int | None, packet_type: PacketType) -> None:
    if packet_id is None or not 0 < packet_id <= MAX_PACKET_ID:
        raise protocol_error(
            f"{packet_type.name} needs a packet identifier 1..{MAX_PACKET_ID}, not {packet_id}"
        )


def _check_reason_code(code: int, packet_type: PacketType) -> None:
    if code not in REASON_CODES_BY_PACKET[packet_type]:
        raise malformed(f"reason code 0x{code:02X} is not valid in {packet_type.name}")


def _reason_codes(values: Iterable[int]) -> tuple[ReasonCode, ...]:
    try:
        return tuple(ReasonCode(value) for value in values)
    except ValueError as exc:
        raise malformed(str(exc)) from None


def _is_bad_text(text: str) -> bool:
    """NUL or lone surrogates: not a well-formed MQTT string at all (0x81)."""
    if "\x00" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_topic_name(topic: str) -> None:
    """Raise unless ``topic`` is a valid topic name (4.7): 0x90, or 0x81 for bad UTF-8."""
    try:
        validate_topic_name(topic)
    except InvalidTopicError as exc:
        code = ReasonCode.MALFORMED_PACKET if _is_bad_text(topic) else ReasonCode.TOPIC_NAME_INVALID
        raise MQTTProtocolError(str(exc), code) from None


def check_topic_filter(topic_filter: str) -> None:
    """Raise unless ``topic_filter`` is valid, ``$share/<group>/<filter>`` included (4.7, 4.8.2).

    0x8F Topic Filter invalid, or 0x81 for a string that is not well-formed UTF-8.
    """
    try:
        parse_shared(topic_filter)
    except InvalidTopicError as exc:
        bad_text = _is_bad_text(topic_filter)
        code = ReasonCode.MALFORMED_PACKET if bad_text else ReasonCode.TOPIC_FILTER_INVALID
        raise MQTTProtocolError(str(exc), code) from None


@attrs.frozen
class Will:
    """The Will Message of a CONNECT (§3.1.2.5, §3.1.3.2-4); ``properties`` are v5 only."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES

    def __attrs_post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise malformed(f"will QoS must be 0, 1 or 2, not {self.qos} (§3.1.2.6)")
        check_topic_name(self.topic)


@attrs.define
class Connect:
    """CONNECT (§3.1). ``clean_start`` is *Clean Session* in 3.x (3.1.1 §3.1.2.4).

    ``protocol_level`` picks the protocol name too (``MQIsdp`` for 3, ``MQTT``).
    Password without user name is allowed only in MQTT 5 (3.1.1 [MQTT-3.1.2-22]).
    """

    packet_type: ClassVar[PacketType] = PacketType.CONNECT

    client_id: str = ""
    protocol_level: int = ProtocolLevel.MQTT_3_1_1
    clean_start: bool = True
    keep_alive: int = 0
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = NO_PROPERTIES
    bridge: bool = False
    """The bridge bit of MQTT 3.1 and 3.1.1 (the protocol level's top bit, 0x83/0x84,
    mosquitto's ``try_private``): the client is another broker's bridge, which gets
    No-Local and Retain-As-Published on every subscription (docs/mesh.md)."""

    def __attrs_post_init__(self) -> None:
        level = self.protocol_level
        if self.bridge and level == 5:
            raise UnsupportedProtocolVersionError("MQTT", level | 0x80)
        if level not in PROTOCOL_NAMES:
            raise UnsupportedProtocolVersionError("MQTT", level)
        if not 0 <= self.keep_alive <= 0xFFFF:
            raise malformed(f"keep alive must be 0..65535, not {self.keep_alive}")
        if level < ProtocolLevel.MQTT_5 and self.password is not None and self.username is None:
            raise malformed("MQTT 3.x allows a password only with a user name [MQTT-3.1.2-22]")
        if self.properties.authentication_data is not None and (
            self.properties.authentication_method is None
        ):
            raise protocol_error("Authentication Data without Authentication Method (§3.1.2.11.10)")

    @property
    def protocol_name(self) -> str:
        return PROTOCOL_NAMES[self.protocol_level]


@attrs.define
class Connack:
    """CONNACK (§3.2). ``reason_code`` is a v5 code at every level; 3.x maps it.

    Session Present is 0 whenever the reason code is an error [MQTT-3.2.2-6], and
    does not exist in MQTT 3.1.
    """

    packet_type: ClassVar[PacketType] = PacketType.CONNACK

    reason_code: ReasonCode = ReasonCode.SUCCESS
    session_present: bool = False
    properties: Properties = NO_PROPERTIES

    def __attrs_post_init__(self) -> None:
        _check_reason_code(self.reason_code, PacketType.CONNACK)
        if self.session_present and self.reason_code >= 0x80:
            raise protocol_error("a refused CONNACK must not set Session Present [MQTT-3.2.2-6]")


@attrs.define
class Publish:
    """PUBLISH (§3.3). ``packet_id`` is None exactly when ``qos`` is 0.

    An empty ``topic`` is allowed only with a Topic Alias property (v5, §3.3.2.3.4).
    """

    packet_type: ClassVar[PacketType] = PacketType.PUBLISH

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = NO_PROPERTIES

    def __attrs_post_init__(self) -> None:
        # The hot path of decoding: plain comparisons, no calls.
        qos = self.qos
        if qos == 1 or qos == 2:
            packet_id = self.packet_id
            if packet_id is None or not 0 < packet_id <= MAX_PACKET_ID:
                raise protocol_error(f"QoS {qos} PUBLISH needs a packet identifier 1..65535")
        elif qos == 0:
            if self.packet_id is not None:
                raise protocol_error("a QoS 0 PUBLISH has no packet identifier (§3.3.2.2)")
            if self.dup:
                raise malformed("DUP must be 0 in a QoS 0 PUBLISH [MQTT-3.3.1-2]")
        else:
            raise malformed(f"PUBLISH QoS must be 0, 1 or 2, not {qos} (§3.3.1.2)")
        topic = self.topic
        if "+" in topic or "#" in topic:
            raise MQTTProtocolError(
                f"topic name {topic!r} must not contain wildcards [MQTT-3.3.2-2]",
                ReasonCode.TOPIC_NAME_INVALID,
            )
        if "\x00" in topic:
            raise malformed("topic name contains U+0000")
        if not topic and self.properties.topic_alias is None:
            raise protocol_error("empty topic name without a Topic Alias (§3.3.2.1)")


@attrs.define
class _Ack:
    """PUBACK, PUBREC, PUBREL and PUBCOMP share one shape (§3.4-3.7)."""

    packet_type: ClassVar[PacketType]

    packet_id: int
    reason_code: ReasonCode = ReasonCode.SUCCESS
    properties: Properties = NO_PROPERTIES

    def __attrs_post_init__(self) -> None:
        _check_packet_id(self.packet_id, self.packet_type)
        if self.reason_code:
            _check_reason_code(self.reason_code, self.packet_type)


@attrs.define
class Puback(_Ack):
    """PUBACK (§3.4): QoS 1 acknowledgment."""

    packet_type: ClassVar[PacketType] = PacketType.PUBACK


@attrs.define
class Pubrec(_Ack):
    """PUBREC (§3.5): QoS 2, part 1."""

    packet_type: ClassVar[PacketType] = PacketType.PUBREC


@attrs.define
class Pubrel(_Ack):
    """PUBREL (§3.6): QoS 2, part 2."""

    packet_type: ClassVar[PacketType] = PacketType.PUBREL


@attrs.define
class Pubcomp(_Ack):
    """PUBCOMP (§3.7): QoS 2, part 3."""

    packet_type: ClassVar[PacketType] = PacketType.PUBCOMP


@attrs.frozen
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (§3.8.3.1).

    ``qos`` is the maximum QoS; the other options exist only in MQTT 5.
    ``retain_handling``: 0 send retained messages, 1 only for a new
    subscription, 2 never.
    """

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0

    def __attrs_post_init__(self) -> None:
        check_topic_filter(self.topic_filter)
        if self.qos not in (0, 1, 2):
            raise protocol_error(f"subscription QoS must be 0, 1 or 2, not {self.qos}")
        if self.retain_handling not in (0, 1, 2):
            raise protocol_error(f"retain handling must be 0, 1 or 2, not {self.retain_handling}")
        if self.no_local and self.topic_filter.startswith(SHARED_PREFIX):
            raise protocol_error("No Local on a shared subscription [MQTT-3.8.3-4]")


def _subscriptions(values: Iterable[Subscription]) -> tuple[Subscription, ...]:
    return tuple(values)


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.define
class Subscribe:
    """SUBSCRIBE (§3.8): at least one subscription [MQTT-3.8.3-2]."""

    packet_type: ClassVar[PacketType] = PacketType.SUBSCRIBE

    packet_id: int
    subscriptions: tuple[Subscription, ...] = attrs.field(converter=_subscriptions)
    properties: Properties = NO_PROPERTIES

    def __attrs_post_init__(self) -> None:
        _check_packet_id(self.packet_id, PacketType.SUBSCRIBE)
        if not self.subscriptions:
            raise protocol_error("SUBSCRIBE without a topic filter [MQTT-3.8.3-2]")
        if len(self.properties.subscription_identifiers) > 1:
            raise protocol_error("SUBSCRIBE carries at most one Subscription Identifier")


@attrs.define
class Suback:
    """SUBACK (§3.9): one reason code per subscription, in order.

    3.x carries granted QoS 0-2 or 0x80; every v5 failure code becomes 0x80.
    """

    packet_type: ClassVar[PacketType] = PacketType.SUBACK

    packet_id: int
    reason_codes: tuple[ReasonCode, ...] = attrs.field(converter=_reason_codes)
    properties: Properties = NO_PROPERTIES

    def __attrs_post_init__(self) -> None:
        _check_packet_id(self.packet_id, PacketType.SUBACK)
        if not self.reason_codes:
            raise protocol_error("SUBACK without a reason code (§3.9.3)")
        for code in self.reason_codes:
            _check_reason_code(code, PacketType.SUBACK)


@attrs.define
class Unsubscribe:
    """UNSUBSCRIBE (§3.10): at least one topic filter [MQTT-3.10.3-2]."""

    packet_type: ClassVar[PacketType] = PacketType.UNSUBSCRIBE

    packet_id: int
    topic_filters: tuple[str, ...] = attrs.field(converter=_strings)
    properties: Properties = NO_PROPERTIES

    def __attrs_post_init__(self) -> None:
        _check_packet_id(self.packet_id, PacketType.UNSUBSCRIBE)
        if not self.topic_filters:
            raise protocol_error("UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]")
        for topic_filter in self.topic_filters:
            check_topic_filter(topic_filter)


@attrs.define
class Unsuback:
    """UNSUBACK (§3.11). ``reason_codes`` (one per filter) exist only in MQTT 5."""

    packet_type: ClassVar[PacketType] = PacketType.UNSUBACK

    packet_id: int
    reason_codes: tuple[ReasonCode, ...] = attrs.field(default=(), converter=_reason_codes)
    properties: Properties = NO_PROPERTIES

    def __attrs_post_init__(self) -> None:
        _check_packet_id(self.packet_id, PacketType.UNSUBACK)
        for code in self.reason_codes:
            _check_reason_code(code, PacketType.UNSUBACK)


@attrs.define
class Pingreq:
    """PINGREQ (§3.12)."""

    packet_type: ClassVar[PacketType] = PacketType.PINGREQ


@attrs.define
class Pingresp:
    """PINGRESP (§3.13)."""

    packet_type: ClassVar[PacketType] = PacketType.PINGRESP


@attrs.define
class Disconnect:
    """DISCONNECT (§3.14); reason code and properties are v5 only."""

    packet_type: ClassVar[PacketType] = PacketType.DISCONNECT

    reason_code: ReasonCode = ReasonCode.NORMAL_DISCONNECTION
    properties: Properties = NO_PROPERTIES

    def __attrs_post_init__(self) -> None:
        _check_reason_code(self.reason_code, PacketType.DISCONNECT)


@attrs.define
class Auth:
    """AUTH (§3.15), MQTT 5 only."""

    packet_type: ClassVar[PacketType] = PacketType.AUTH

    reason_code: ReasonCode = ReasonCode.SUCCESS
    properties: Properties = NO_PROPERTIES

    def __attrs_post_init__(self) -> None:
        _check_reason_code(self.reason_code, PacketType.AUTH)


Packet: TypeAlias = (
    Connect
    | Connack
    | Publish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
    | Auth
)

#: packet type -> class
PACKET_CLASSES: dict[PacketType, type[Packet]] = {
    cls.packet_type: cls
    for cls in (
        Connect,
        Connack,
        Publish,
        Puback,
        Pubrec,
        Pubrel,
        Pubcomp,
        Subscribe,
        Suback,
        Unsubscribe,
        Unsuback,
        Pingreq,
        Pingresp,
        Disconnect,
        Auth,
    )
}
