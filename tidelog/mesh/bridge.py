"""A bridge: a ``[[link]]`` whose remote is a plain MQTT broker (mosquitto, ...).

``bridge = "mqtt5"`` or ``"mqtt311"`` on a ``[[link]]`` makes this node an MQTT
client of the remote (docs/mesh.md, "Bridges to other brokers"):

* **pull**: a persistent session (Clean Start 0, a long Session Expiry in MQTT 5)
  subscribed at QoS 1 to the ``pull`` filters (under ``remote_prefix``), with
  No-Local and Retain-As-Published in MQTT 5. Every message waiting when one
  arrives is appended in one durable write, renamed under ``local_prefix``, and
  only then acknowledged: at least once into the log (a crash between the append
  and the PUBACK gets the message again). A message another tidelog pushed
  carries its stamps (:mod:`tidelog.mesh.stamps`: origin node and offset): it is
  dropped if that origin's offset was appended here already (a redelivery after a
  reconnect, or a copy that came another way) or if its origin is this node, so
  it is stored once (the per-origin positions advance in the same write).
  Only what the ``pull`` filters cover (and no ``$`` topic) is appended: anything
  else the remote sends is acknowledged, dropped and counted (``refused``).
* **push**: this node's log read from a position stored in the log (``mesh``
  state namespace, key ``bridge/<name>``, written when the link is created and
  deleted with it), the events matching ``push`` sent at QoS 1 (retain flag and
  MQTT 5 properties kept, plus the stamps: the event's origin node, incarnation
  and offset, and its hop count); the position advances once the remote acknowledged the
  whole read: at least once into the remote. A PUBACK error (>= 0x80) stops the
  position at that message and ends the connection (redialed with backoff). With
  ``push_qos = 2`` packet ids follow from offsets and the messages being released
  are stored (:func:`releasing_key`): exactly once into the remote across cuts and
  crashes, while the remote keeps the session.

The remote keeps no offsets: the stamps make it exactly once into another
tidelog behind an MQTT 5 remote; what a user loses with a 3.1.1 remote is listed
in docs/mesh.md. Loops: messages the bridge appended carry the publisher id
``bridge:<name>`` and are never pushed back over it, nor forwarded by links and
bridges in ``local`` mode (MQTT clients may not use the prefix); MQTT 5's
No-Local keeps the remote from echoing what the bridge published. In ``transit``
mode a message that went around a cycle of brokers is dropped by its origin (or
by any node that has it already), and the hop limit counts bridges too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import trio

from tidelog.concurrency import background_nursery
from tidelog.mesh.config import LinkConfig
from tidelog.mesh.positions import origin_of
from tidelog.mesh.stamps import checked, stamp, stamped_hops, stamped_origin
from tidelog.mesh.status import LinkStatus
from tidelog.mesh.stream import LinkChannel, LinkClosed, LinkRefused
from tidelog.protocols.mqtt.decoder import Decoder, Role
from tidelog.protocols.mqtt.outbound import event_properties
from tidelog.protocols.mqtt.packets import (
    Connack,
    Connect,
    Disconnect,
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
)
from tidelog.protocols.mqtt.properties import Properties
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.storage.records import BRIDGE_CLIENT_PREFIX, Event, NewEvent, Provenance
from tidelog.topics import Matcher, compile_filter

if TYPE_CHECKING:
    from tidelog.engine import Broker
    from tidelog.mesh.node import Mesh

log = logging.getLogger("tidelog.mesh")
SESSION_EXPIRY = 7 * 24 * 3600
"""Seconds the remote keeps the bridge's session (and its queued messages) while the
bridge is away (MQTT 5; a 3.1.1 session with Clean Session 0 never expires)."""
HANDSHAKE_SECONDS = 10.0
STATE_NAMESPACE = "mesh"
APPEND_BATCH = 1000
"""Most received messages appended in one durable write."""
PUSH_INFLIGHT = 100
"""Most pushed messages unacknowledged at once (lowered to the remote's Receive Maximum)."""
WARNED_TOPICS = 100
"""Most distinct refused topics warned about per connection (the log stays bounded)."""


async def run_bridge(
    mesh: Mesh,
    link: LinkConfig,
    status: LinkStatus,
    open_stream: Callable[[LinkConfig], Awaitable[trio.abc.Stream]],
) -> None:
    """One connection of a bridge. A ``mqtt311`` bridge sends the bridge bit first, as
    mosquitto's ``try_private`` does, and connects again without it if the remote
    refuses that protocol level."""
    bridge_bit = link.bridge == "mqtt311"
    while True:
        async with await open_stream(link) as stream:
            try:
                await Bridge(mesh, link, status, stream, bridge_bit=bridge_bit).run()
                return
            except SessionCleared:
                continue  # the 3.1.1 bridge's first connection: now the persistent one
            except LinkRefused as exc:
                if not bridge_bit or exc.code != ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
                    raise
        bridge_bit = False


class SessionCleared(Exception):
    """A new ``mqtt311`` bridge connected with a clean session and disconnected: the
    remote dropped any session its client id had there; connect again, persistent."""


def publisher_id(link: LinkConfig) -> str:
    """The publisher id the bridge's appended messages carry (never pushed back)."""
    return f"{BRIDGE_CLIENT_PREFIX}{link.name}"


def position_key(link_name: str) -> str:
    """The state key (``mesh`` namespace) of the bridge's push position in this log."""
    return f"bridge/{link_name}"


def session_key(link_name: str) -> str:
    """The state key (``mesh`` namespace) present once a bridge has connected: its
    first CONNECT starts a clean session (a remote session left by an earlier bridge
    of the same name, with its QoS 2 packet ids and queued messages, is not taken
    over); later ones resume it. A 3.1.1 clean session also ends at the disconnect,
    so an ``mqtt311`` bridge's first connection only clears the remote's session and
    hangs up (:class:`SessionCleared`); the next one opens the persistent session."""
    return f"bridge-session/{link_name}"


def releasing_key(link_name: str) -> str:
    """The state key (``mesh`` namespace) of a ``push_qos = 2`` bridge's releasing
    messages (PUBREC received, PUBREL sent, PUBCOMP not yet): stored before the PUBREL
    leaves, so a node that crashed releases them again instead of publishing them
    again (the remote, having completed one, would deliver it twice)."""
    return f"bridge-releasing/{link_name}"


def _encoded_releasing(url: str, releasing: dict[int, int]) -> bytes | None:
    """The stored form of ``releasing`` (offset -> packet id) for the remote at ``url``,
    or None (deleted) when there is none."""
    if not releasing:
        return None
    return json.dumps({"url": url, "offsets": sorted(releasing)}).encode()


def _decoded_releasing(url: str, stored: bytes | None, position: int) -> dict[int, int]:
    """Stored releasing messages at or past the push ``position``, for the remote at
    ``url`` (another remote never had them)."""
    if stored is None:
        return {}
    data = json.loads(stored)
    if data.get("url") != url:
        return {}
    return {o: qos2_packet_id(o) for o in data["offsets"] if o >= position}


def qos2_packet_id(offset: int) -> int:
    """A QoS 2 push's packet id, which follows from the event's offset: a message sent
    again after a reconnect or a restart has the id the remote knows it by (and is not
    delivered twice)."""
    return offset % 0xFFFF + 1


UPGRADED_KEY = "upgraded/mqtt311-sessions"
"""Present once :func:`mark_mqtt311_sessions` ran on this log."""


async def mark_mqtt311_sessions(broker: Broker, links: Iterable[LinkConfig]) -> None:
    """Once per log, before any new bridge stores its position: an ``mqtt311`` bridge of
    a version that never cleared a remote session stored no :func:`session_key`, so
    one with a push position has connected before (or was created to); mark it, so
    its next connection resumes its remote session (with what the remote queued
    while the node was down) instead of clearing it."""
    state = await broker.load_state(STATE_NAMESPACE)
    if UPGRADED_KEY in state:
        return
    items: dict[str, bytes | None] = {
        session_key(link.name): b"1"
        for link in links
        if link.bridge == "mqtt311"
        and position_key(link.name) in state
        and session_key(link.name) not in state
    }
    items[UPGRADED_KEY] = b"1"
    await broker.save_state(STATE_NAMESPACE, items)


async def store_start_position(broker: Broker, link: LinkConfig) -> None:
    """Give a new bridge its push position: the log's end now, when the link is
    created (not when it first connects: what is published while the remote is
    unreachable is pushed once it answers). A stored position is kept."""
    key = position_key(link.name)
    if key not in await broker.load_state(STATE_NAMESPACE):
        await broker.save_state(STATE_NAMESPACE, {key: str(broker.end_offset).encode()})


async def forget_position(broker: Broker, link_name: str) -> None:
    """Delete a deleted link's push position and session mark (a new bridge of that
    name starts anew)."""
    await broker.save_state(STATE_NAMESPACE, dict.fromkeys(_link_keys(link_name)))


async def forget_releasing(broker: Broker, link_name: str) -> None:
    """Delete a replaced bridge's releasing messages (its new settings may name
    another remote, which never had them)."""
    await broker.save_state(STATE_NAMESPACE, {releasing_key(link_name): None})


def _link_keys(link_name: str) -> tuple[str, str, str]:
    """The state keys a bridge keeps in the ``mesh`` namespace."""
    return position_key(link_name), session_key(link_name), releasing_key(link_name)


async def forget_stale_positions(broker: Broker, bridges: Iterable[str]) -> list[str]:
    """Delete the push positions of bridges that are no longer links here (removed
    from the configuration file while the node was down, or no longer bridges), as
    :func:`forget_position` does for a deleted one; returns their names."""
    keep = {key for name in bridges for key in _link_keys(name)}
    prefix, prefixes = position_key(""), _link_keys("")
    stale = [
        key
        for key in await broker.load_state(STATE_NAMESPACE)
        if key.startswith(prefixes) and key not in keep
    ]
    if stale:
        await broker.save_state(STATE_NAMESPACE, dict.fromkeys(stale))
    return [key.removeprefix(prefix) for key in stale if key.startswith(prefix)]


class Bridge:
    """One connection of a bridge to a plain MQTT broker (see the module docs)."""

    def __init__(
        self,
        mesh: Mesh,
        link: LinkConfig,
        status: LinkStatus,
        stream: trio.abc.Stream,
        *,
        bridge_bit: bool = False,
    ) -> None:
        self.mesh = mesh
        self.broker = mesh.broker
        self.link = link
        self.status = status
        self.level = 5 if link.bridge == "mqtt5" else 4
        self.channel = LinkChannel(stream, Decoder(self.level, role=Role.CLIENT), self.level)
        self.marker = publisher_id(link)
        self.bridge_bit = bridge_bit
        self._received_in, self._received_out = trio.open_memory_channel[Publish](APPEND_BATCH)
        self._acks: dict[int, trio.Event] = {}
        self._offsets: dict[int, int] = {}
        """QoS 2 pushes in flight: packet id -> offset (for :attr:`Mesh.releasing`)."""
        self._releasing = mesh.releasing[link.name]
        self._refusals: dict[int, ReasonCode] = {}
        """Packet ids the remote's PUBACK refused (reason code >= 0x80), until checked."""
        self._pull_matchers = [compile_filter(f) for f in link.local_pull]
        self._warned: set[str] = set()
        self._suback = trio.Event()
        self._inflight = PUSH_INFLIGHT
        self._keep_alive = max(1, int(link.heartbeat_seconds * 3))

    async def run(self) -> None:
        """Connect, subscribe, then pull and push until the connection ends."""
        await self._connect()
        self.status.state = "connected"
        self.status.peer = f"mqtt:{self.link.host}:{self.link.port}"
        self.status.connects += 1
        self.status.last_error = None
        log.info("mesh: bridge %s connected to %s", self.link.name, self.link.url)
        async with background_nursery() as nursery:
            nursery.start_soon(self._appender)
            nursery.start_soon(self._pinger)
            if self.link.push:
                nursery.start_soon(self._pusher)
            if self.link.pull:
                nursery.start_soon(self._subscribe)
            try:
                await self._read()
            finally:
                nursery.cancel_scope.cancel()

    async def _connect(self) -> None:
        link = self.link
        properties = Properties()
        if self.level == 5:
            properties = Properties(session_expiry_interval=SESSION_EXPIRY)
        key = session_key(link.name)
        clean = key not in await self.broker.load_state(STATE_NAMESPACE)
        await self.channel.send(
            Connect(
                client_id=f"{self.mesh.node_id}-{link.name}",
                protocol_level=self.level,
                clean_start=clean,
                keep_alive=self._keep_alive,
                username=link.username,
                password=link.password.encode() if link.password is not None else None,
                properties=properties,
                bridge=self.bridge_bit,
            )
        )
        connack = None
        with trio.move_on_after(HANDSHAKE_SECONDS):
            connack = await self.channel.receive()
        if not isinstance(connack, Connack):
            raise LinkClosed("no CONNACK")
        if connack.reason_code != ReasonCode.SUCCESS:
            raise LinkRefused(connack.reason_code, f"CONNACK {connack.reason_code.name}")
        if clean:
            await self.broker.save_state(STATE_NAMESPACE, {key: b"1"})
            if self.level == 4:
                # a 3.1.1 clean session would end at the disconnect, and the remote
                # would queue nothing for the bridge across a cut: clear, then resume
                await self.channel.send(Disconnect())
                raise SessionCleared(link.name)
        if not connack.session_present:
            # the remote has no session (it never had one, or lost it restarting without
            # persistence): it holds no QoS 2 message awaiting PUBREL, so what we were
            # releasing must be published again, not just released
            self._releasing.clear()
            if self.link.push_qos == 2:
                await self.broker.save_state(STATE_NAMESPACE, {releasing_key(link.name): None})
        if connack.properties.receive_maximum:
            self._inflight = min(PUSH_INFLIGHT, connack.properties.receive_maximum)

    async def _subscribe(self) -> None:
        v5 = self.level == 5
        # retain handling 1 (MQTT 5): retained messages only for a new subscription, not
        # again at every reconnect of the persistent session
        subscriptions = tuple(
            Subscription(f, 1, no_local=v5, retain_as_published=v5, retain_handling=int(v5))
            for f in self.link.remote_pull
        )
        await self.channel.send(Subscribe(1, subscriptions))
        with trio.move_on_after(HANDSHAKE_SECONDS):
            await self._suback.wait()
        if not self._suback.is_set():
            raise LinkClosed("no SUBACK")

    # -- reader ----------------------------------------------------------------------

    async def _read(self) -> None:
        silence = 2 * self._keep_alive
        while True:
            with trio.move_on_after(silence) as scope:
                packet = await self.channel.receive()
            if scope.cancelled_caught:
                raise LinkClosed(f"nothing heard for {silence}s")
            if isinstance(packet, Publish):
                await self._received_in.send(packet)
            elif isinstance(packet, Puback | Pubcomp):
                self._releasing.pop(self._offsets.pop(packet.packet_id, -1), None)
                done = self._acks.pop(packet.packet_id, None)
                if done is not None:
                    # a PUBCOMP's error (0x92: no such packet id) means it was complete
                    if isinstance(packet, Puback) and packet.reason_code >= 0x80:
                        self._refusals[packet.packet_id] = packet.reason_code
                    done.set()
            elif isinstance(packet, Pubrec):
                received = [packet]  # with those read at once: one durable write
                pending = self.channel.pending
                while pending and isinstance(pending[0], Pubrec):
                    received.append(pending.pop(0))  # type: ignore[arg-type]
                await self._received(received)
            elif isinstance(packet, Suback):
                refused = [c for c in packet.reason_codes if c >= 0x80]
                if refused:
                    raise LinkRefused(
                        ReasonCode(refused[0]), f"the remote refused the subscription: {refused[0]}"
                    )
                self._suback.set()
            elif isinstance(packet, Disconnect):
                raise LinkClosed(f"the remote disconnected: {packet.reason_code!r}")
            elif not isinstance(packet, Pingresp):
                raise LinkClosed(f"unexpected {type(packet).__name__} from the remote")

    async def _received(self, packets: list[Pubrec]) -> None:
        """QoS 2, part 1: the remote has the messages; release them (PUBREL, once
        they are stored as releasing: :func:`releasing_key`), or, for a refusal
        (>= 0x80), end a message's flow like a refused PUBACK."""
        releases: list[Pubrel] = []
        releasing: dict[int, int] = {}
        for packet in packets:
            offset = self._offsets.get(packet.packet_id)
            if offset is None:
                continue  # not (or no longer) in flight on this connection
            if packet.reason_code >= 0x80:
                del self._offsets[packet.packet_id]
                self._refusals[packet.packet_id] = packet.reason_code
                done = self._acks.pop(packet.packet_id, None)
                if done is not None:
                    done.set()
                continue
            releasing[offset] = packet.packet_id
            releases.append(Pubrel(packet.packet_id))
        if releases:
            # remembered once stored: a failed save must not leave them released in
            # memory only (a later crash would publish them again)
            stored = _encoded_releasing(self.link.url, self._releasing | releasing)
            await self.broker.save_state(STATE_NAMESPACE, {releasing_key(self.link.name): stored})
            self._releasing.update(releasing)
            await self.channel.send(*releases)

    async def _pinger(self) -> None:
        while True:
            await trio.sleep(self._keep_alive / 2)
            await self.channel.send(Pingreq())

    # -- pull: append what arrives -----------------------------------------------------

    async def _appender(self) -> None:
        """Append every message waiting (one durable write), then acknowledge them."""
        async for first in self._received_out:
            packets = [first]
            while len(packets) < APPEND_BATCH:
                try:
                    packets.append(self._received_out.receive_nowait())
                except trio.WouldBlock:
                    break
            events = []
            for packet in packets:
                topic = self.link.to_local(packet.topic)
                if topic is None:
                    continue
                if not self._pulls(topic):
                    continue
                events.append(
                    NewEvent(
                        topic,
                        packet.payload,
                        min(packet.qos, 1),
                        packet.retain,
                        checked(event_properties(packet.properties), packet.topic, packet.payload),
                        Provenance(client_id=self.marker),
                    )
                )
            fresh = await self._append(events) if events else []
            self.status.events_in += len(fresh)
            self.status.duplicates += len(events) - len(fresh)
            self.status.batches_in += 1
            acks = [Puback(p.packet_id) for p in packets if p.qos == 1 and p.packet_id]
            if acks:
                await self.channel.send(*acks)

    async def _append(self, events: list[NewEvent]) -> list[NewEvent]:
        """Append what was not appended yet (by the stamps' origin and offset: a
        redelivery, or an event of this node come back), in one durable write that
        advances the per-origin positions with it; returns what was appended."""
        me = self.mesh.node_id
        events = [e for e in events if (origin := stamped_origin(e)) is None or origin[0] != me]
        # one lock for every bridge: two bridges may carry the same origin's events
        async with self.mesh.peer_lock(BRIDGE_CLIENT_PREFIX):
            return await self.mesh.positions.append_fresh(self.broker, events)

    def _pulls(self, topic: str) -> bool:
        """Whether a received message (named ``topic`` here) may enter the log: only
        what the ``pull`` filters cover and no ``$`` topic, whatever the remote sends.
        A refused one is counted (``refused``), warned about once per topic, and still
        acknowledged (so the remote does not resend it forever)."""
        if not topic.startswith("$") and any(match(topic) for match in self._pull_matchers):
            return True
        self.status.refused += 1
        if topic not in self._warned and len(self._warned) < WARNED_TOPICS:
            self._warned.add(topic)
            log.warning(
                "mesh: bridge %s: the remote sent %r, outside the pull filters; dropped",
                self.link.name,
                topic,
            )
        return False

    # -- push: send this node's events -------------------------------------------------

    async def _pusher(self) -> None:
        key = position_key(self.link.name)
        stored = (await self.broker.load_state(STATE_NAMESPACE)).get(key)
        first = (await self.broker.log_state()).first_offset
        # the position is stored when the link is created (store_start_position)
        position = max(first, int(stored)) if stored is not None else self.broker.end_offset
        filters = self.link.local_push
        single = filters[0] if len(filters) == 1 else None
        matchers = [compile_filter(f) for f in filters]
        packet_id = 0
        qos2 = self.link.push_qos == 2
        if qos2:  # what a crashed run was releasing
            stored_releasing = (await self.broker.load_state(STATE_NAMESPACE)).get(
                releasing_key(self.link.name)
            )
            self._releasing.update(_decoded_releasing(self.link.url, stored_releasing, position))
        while True:
            result = await self.broker.read(
                position, single, limit=self._inflight, wait=self.link.heartbeat_seconds
            )
            events = [e for e in result.events if self._pushes(e, matchers)]
            next_offset = result.next_offset
            if qos2:  # packet ids follow from offsets (qos2_packet_id): 65,535 at most
                for index, event in enumerate(events):
                    if event.offset - events[0].offset >= 0xFFFF:
                        events, next_offset = events[:index], event.offset
                        break
            done: list[trio.Event] = []
            packets: list[Publish | Pubrel] = []
            for event in events:
                packet_id = qos2_packet_id(event.offset) if qos2 else packet_id % 0xFFFF + 1
                done.append(self._acks.setdefault(packet_id, trio.Event()))
                if qos2:
                    self._offsets[packet_id] = event.offset
                if qos2 and event.offset in self._releasing:
                    packets.append(Pubrel(packet_id))  # the remote has it: complete it
                else:
                    packets.append(self._publish(event, packet_id))
            if packets:
                await self.channel.send(*packets)
                await self._completed(events, packets, done, position, key)
                refused = self._refused(events, packets)
                if refused is not None:
                    await self._refused_at(refused, position, key)
                self.status.events_out += len(packets)
                self.status.batches_out += 1
            if next_offset > position:
                position = next_offset
                saved: dict[str, bytes | None] = {key: str(position).encode()}
                if qos2:  # completed ones are gone from it
                    saved[releasing_key(self.link.name)] = _encoded_releasing(
                        self.link.url, self._releasing
                    )
                await self.broker.save_state(STATE_NAMESPACE, saved)
                self.status.position = position

    async def _completed(
        self,
        events: list[Event],
        packets: list[Publish | Pubrel],
        done: list[trio.Event],
        position: int,
        key: str,
    ) -> None:
        """Wait until the remote has acknowledged (or completed) every message sent; if
        the connection ends first, keep the position past those it did, in order (they
        are not sent again: a completed QoS 2 message is forgotten by the remote, and
        would be delivered twice)."""
        try:
            for each in done:
                await each.wait()
        finally:
            link = self.mesh.links.get(self.link.name)  # not for a link deleted meanwhile
            if link is not None and link.bridge is not None:
                acked = position
                for event, packet, each in zip(events, packets, done, strict=True):
                    if not each.is_set() or packet.packet_id in self._refusals:
                        break
                    acked = event.offset + 1
                if acked > position and not all(each.is_set() for each in done):
                    with trio.CancelScope(shield=True):
                        await self.broker.save_state(STATE_NAMESPACE, {key: str(acked).encode()})
                    self.status.position = acked

    def _refused(
        self, events: list[Event], packets: list[Publish | Pubrel]
    ) -> tuple[Event, ReasonCode] | None:
        """The first pushed event the remote's PUBACK refused, and its reason code."""
        if not self._refusals:
            return None
        found = None
        for event, packet in zip(events, packets, strict=True):
            code = self._refusals.pop(packet.packet_id or 0, None)
            if code is not None and found is None:
                found = event, code
        return found

    async def _refused_at(self, refused: tuple[Event, ReasonCode], position: int, key: str) -> None:
        """The remote refused a pushed message: keep the position at it (what it
        acknowledged before counts as delivered) and end the connection, so the link
        redials with its backoff and sends it again."""
        event, code = refused
        if event.offset > position:
            await self.broker.save_state(STATE_NAMESPACE, {key: str(event.offset).encode()})
            self.status.position = event.offset
        reason = (
            f"the remote refused the message at offset {event.offset} "
            f"({event.topic!r}): PUBACK 0x{code:02X} {code.name}"
        )
        log.warning("mesh: bridge %s: %s; retrying after a reconnect", self.link.name, reason)
        raise LinkClosed(reason)

    def _pushes(self, event: Event, matchers: list[Matcher]) -> bool:
        provenance = event.provenance
        if provenance is not None:
            if provenance.client_id == self.marker:
                return False  # it came in over this bridge
            if not provenance.local:
                if self.link.mode == "local":
                    return False  # it came over a link or another bridge: only transit
                if len(provenance.hop_path) + stamped_hops(event) >= self.link.hop_limit:
                    return False  # the hop limit: the last guard against a cycle
        if self.link.to_remote(event.topic) is None:
            return False
        return any(match(event.topic) for match in matchers)

    def _publish(self, event: Event, packet_id: int) -> Publish:
        topic = self.link.to_remote(event.topic)
        assert topic is not None
        properties = Properties()
        if self.level == 5:
            stored = event.properties
            me = self.mesh.identity
            origin = origin_of(event) or (me.node_id, me.incarnation, event.offset)
            hops = len(event.provenance.hop_path) if event.provenance is not None else 0
            users = stamp(stored, origin, hops + stamped_hops(event) + 1, topic, event.payload)
            if stored is None:
                properties = Properties(user_properties=users)
            else:
                properties = Properties(
                    payload_format_indicator=stored.payload_format,
                    message_expiry_interval=stored.message_expiry,
                    content_type=stored.content_type,
                    response_topic=stored.response_topic,
                    correlation_data=stored.correlation_data,
                    user_properties=users,
                )
        return Publish(
            topic,
            event.payload,
            qos=self.link.push_qos,
            retain=event.retain,
            packet_id=packet_id,
            properties=properties,
        )
