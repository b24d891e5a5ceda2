"""tidelog's sans-IO MQTT codec for protocol levels 3 (3.1), 4 (3.1.1) and 5 (5.0).

No I/O and no trio: bytes in, packets out, packets in, bytes out. A server
connection uses it like this::

    decoder = Decoder(max_packet_size=limit)          # server side, level from CONNECT
    try:
        packets = decoder.feed(data)                  # every complete packet of one read
    except MQTTProtocolError as exc:
        handle(exc.packets)                           # valid packets before the bad one
        await stream.send_all(error_reply(exc))       # CONNACK/DISCONNECT, or b""
        ...close...
    level = decoder.protocol_level
    await stream.send_all(encode_many(replies, level))  # one buffer per wake-up

Modules: :mod:`.protocol` (packet types, levels, limits), :mod:`.reason_codes`,
:mod:`.properties`, :mod:`.packets`, :mod:`.wire` (data representations),
:mod:`.decoder`, :mod:`.encoder`, :mod:`.replies`, :mod:`.errors`.

The server on top of the codec (not imported here): the sans-IO session
(:mod:`.session`, :mod:`.planner`, :mod:`.subscriptions`, :mod:`.admission`,
:mod:`.stored_session`) and the trio shell (:mod:`.connection`, :mod:`.sender`,
:mod:`.server`); docs/architecture.md shows the message path through them.
"""

from tidelog.protocols.mqtt.decoder import Decoder, Role
from tidelog.protocols.mqtt.encoder import encode, encode_many
from tidelog.protocols.mqtt.errors import MQTTProtocolError, UnsupportedProtocolVersionError
from tidelog.protocols.mqtt.packets import (
    PACKET_CLASSES,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
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
)
from tidelog.protocols.mqtt.properties import (
    NO_PROPERTIES,
    PROPERTY_SPECS,
    WILL,
    Properties,
    PropertyId,
)
from tidelog.protocols.mqtt.protocol import MAX_PACKET_SIZE, PacketType, ProtocolLevel
from tidelog.protocols.mqtt.reason_codes import (
    REASON_CODE_NAMES,
    ConnackReturnCode,
    ReasonCode,
    connack_return_code,
    reason_code_name,
)
from tidelog.protocols.mqtt.replies import error_reply

__all__ = [
    "MAX_PACKET_SIZE",
    "NO_PROPERTIES",
    "PACKET_CLASSES",
    "PROPERTY_SPECS",
    "REASON_CODE_NAMES",
    "WILL",
    "Auth",
    "Connack",
    "ConnackReturnCode",
    "Connect",
    "Decoder",
    "Disconnect",
    "MQTTProtocolError",
    "Packet",
    "PacketType",
    "Pingreq",
    "Pingresp",
    "Properties",
    "PropertyId",
    "ProtocolLevel",
    "Puback",
    "Pubcomp",
    "Publish",
    "Pubrec",
    "Pubrel",
    "ReasonCode",
    "Role",
    "Suback",
    "Subscribe",
    "Subscription",
    "Unsuback",
    "Unsubscribe",
    "UnsupportedProtocolVersionError",
    "Will",
    "connack_return_code",
    "encode",
    "encode_many",
    "error_reply",
    "reason_code_name",
]
