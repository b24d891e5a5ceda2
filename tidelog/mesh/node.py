"""The mesh of one server: its identity, positions, outbound links and the accept hook.

:class:`Mesh` is created by :func:`tidelog.server.run_server` when the server
starts. :meth:`Mesh.recover` restores the link positions from the log before
any listener accepts a link; :meth:`Mesh.run` dials the configured links
(reconnecting with backoff) and writes position checkpoints;
:meth:`Mesh.accept` is the MQTT listener's hook for connections that ask to
be links (``MQTTServer.link_acceptor``).

Handshake (messages in :mod:`tidelog.mesh.wire`)::

    dialer                                   remote
    CONNECT (tidelog-link: 1, credentials) ->
                                          <- CONNACK (authenticated as any client)
    $link/hello (node, link, filters, mode, nodes) ->
                                             checks: link right on every filter,
                                             one link per pair of nodes, no cycle
                                          <- $link/welcome (node, nodes, push_from)
                                             or DISCONNECT with the reason
    $link/start (pull_from) ->               the remote's source starts (pull)
    the dialer's source starts at push_from (push)
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import ssl
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import trio

from tidelog.concurrency import background_nursery, held
from tidelog.engine import Broker
from tidelog.errors import LinkConflictError, LinkNotFoundError, LogClosedError
from tidelog.mesh import wire
from tidelog.mesh.bridge import (
    forget_position,
    forget_releasing,
    forget_stale_positions,
    mark_mqtt311_sessions,
    run_bridge,
    store_start_position,
)
from tidelog.mesh.config import LINKS_NAMESPACE, NODE_ID_PATTERN, LinkConfig, parse_link
from tidelog.mesh.identity import NodeIdentity, load_identity
from tidelog.mesh.positions import CHECKPOINT_KEY, NAMESPACE, MeshPositions
from tidelog.mesh.routing import Route, closes_cycle, reachable
from tidelog.mesh.status import LinkStatus
from tidelog.mesh.stream import (
    STREAM_ERRORS,
    LinkChannel,
    LinkClosed,
    LinkRefused,
    LinkSession,
)
from tidelog.protocols.mqtt.decoder import Decoder, Role
from tidelog.protocols.mqtt.errors import MQTTProtocolError
from tidelog.protocols.mqtt.packets import Connack, Connect, Disconnect, Packet
from tidelog.protocols.mqtt.properties import Properties
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.security import Access, Grant, Right
from tidelog.security.acl import covers, overlaps
from tidelog.topics import validate_topic_filter

log = logging.getLogger("tidelog.mesh")
HANDSHAKE_SECONDS = 10.0
CHECKPOINT_SECONDS = 2.0
CURSOR_POLL_SECONDS = 1.0
"""How often live interest looks for durable cursors created or deleted."""


class Mesh:
    """One server's links (see the module docs)."""

    def __init__(
        self, broker: Broker, identity: NodeIdentity, links: Sequence[LinkConfig] = ()
    ) -> None:
        self.broker = broker
        self.identity = identity
        self.links: dict[str, LinkConfig] = {link.name: link for link in links}
        """The links this node dials, by name: the configuration file's and REST's."""
        self.configured = frozenset(self.links)
        """Names of the links from the configuration file (REST cannot change them)."""
        self.owners: dict[str, str] = {}
        """Links created at run time (REST, persisted): name -> the user who created it."""
        self.positions = MeshPositions()
        self.statuses: dict[str, LinkStatus] = {}
        """Outbound links by name, inbound ones by ``<peer>:<link>``."""
        for link in links:
            self._new_status(link)
        self.sessions: dict[str, LinkSession] = {}
        """Connected links by peer node (one link per pair of nodes)."""
        self.releasing: defaultdict[str, dict[int, int]] = defaultdict(dict)
        """QoS 2 pushes of each bridge the remote has received (PUBREC) but not yet
        completed (PUBCOMP), offset -> packet id: across a reconnect they get a PUBREL
        again, not a second PUBLISH (``push_qos = 2``)."""
        self.cursor_filters: set[str] = set()
        """The filters of this node's durable cursors (live interest: their consumers
        read later, and what they want must still arrive)."""
        self._peer_locks: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        self._dialers: dict[str, tuple[trio.CancelScope, trio.Event]] = {}
        """Running dialers: their scope, and an event set once the dialer has ended."""
        self._nursery: trio.Nursery | None = None

    @classmethod
    async def open(
        cls, broker: Broker, node_id: str | None, links: Sequence[LinkConfig] = ()
    ) -> Mesh:
        """Load the identity, the links created at run time, and recover the positions
        (before any link runs)."""
        mesh = cls(broker, await load_identity(broker, node_id), links)
        await mesh._load_links()
        bridges = [link for link in mesh.links.values() if link.bridge is not None]
        await mark_mqtt311_sessions(broker, bridges)
        for link in bridges:
            await store_start_position(broker, link)  # a configured link: new here now
        for name in await forget_stale_positions(broker, [link.name for link in bridges]):
            log.info("mesh: bridge %s is gone from the configuration; its position deleted", name)
        read = await mesh.positions.recover(broker)
        await mesh._load_cursor_filters()
        log.info(
            "mesh: node %s (incarnation %s), %d link(s); positions recovered (%d events read)",
            mesh.identity.node_id,
            mesh.identity.incarnation,
            len(mesh.links),
            read,
        )
        return mesh

    def _new_status(self, link: LinkConfig) -> LinkStatus:
        status = self.statuses[link.name] = LinkStatus(
            link.name, "outbound", link.url, link.mode, link.pull, link.push
        )
        status.owner = self.owners.get(link.name)
        status.local_prefix, status.remote_prefix = link.local_prefix, link.remote_prefix
        status.bridge = link.bridge
        return status

    # -- links at run time (REST, CLI) -----------------------------------------------

    async def _load_links(self) -> None:
        for name, raw in sorted((await self.broker.load_state(LINKS_NAMESPACE)).items()):
            try:
                stored = json.loads(raw)
                link = parse_link(stored["link"], f"stored link {name!r}")
                owner = str(stored["owner"])
            except (ValueError, KeyError, TypeError) as exc:
                log.error("mesh: stored link %r cannot be loaded (%s); skipped", name, exc)
                continue
            if name in self.configured:
                log.warning(
                    "mesh: link %r is in the configuration file; the one created over "
                    "REST is ignored",
                    name,
                )
                continue
            self.links[name] = link
            self.owners[name] = owner
            self._new_status(link)

    async def put_link(self, link: LinkConfig, owner: str) -> bool:
        """Create or replace a link at run time (persisted: it is dialed again after a
        restart); True if it was created. A replaced link is redialed with its new
        settings; its positions stay (they belong to the peer node, not the link)."""
        if link.name in self.configured:
            raise LinkConflictError(
                f"link {link.name!r} is defined in the configuration file; change it there"
            )
        if self._nursery is None:
            raise LogClosedError("the mesh is not running")
        old = self.links.get(link.name)
        created = old is None
        record = {"owner": owner, "link": link.stored()}
        # the old link's last saves (a bridge's push position) land before what follows
        await self._stop_dialer(link.name)
        if link.bridge is not None:
            await store_start_position(self.broker, link)
        elif old is not None and old.bridge is not None:
            await forget_position(self.broker, link.name)  # a bridge no longer
        await self.broker.save_state(LINKS_NAMESPACE, {link.name: json.dumps(record).encode()})
        if old is not None and old.url != link.url:
            # QoS 2 pushes being released belong to the old remote; to the same one they
            # must be released, not published again (it may have delivered them)
            self.releasing.pop(link.name, None)
            if old.bridge is not None:
                await forget_releasing(self.broker, link.name)
        self.links[link.name] = link
        self.owners[link.name] = owner
        self._new_status(link)
        self._start_dialer(link)
        log.info("mesh: link %s %s by %s", link.name, "created" if created else "replaced", owner)
        return created

    async def delete_link(self, name: str) -> None:
        """Stop and forget a link created at run time (its positions stay, so a link
        to the same peer created later resumes where this one stopped; a bridge's push
        position goes: it belongs to the link, and a new bridge of the name starts anew)."""
        if name in self.configured:
            raise LinkConflictError(
                f"link {name!r} is defined in the configuration file; remove it there"
            )
        if name not in self.owners:
            raise LinkNotFoundError(f"no link named {name!r}")
        await self._stop_dialer(name)  # its last saves land before the position goes
        await self.broker.save_state(LINKS_NAMESPACE, {name: None})
        await forget_position(self.broker, name)
        del self.links[name], self.owners[name], self.statuses[name]
        self.releasing.pop(name, None)
        log.info("mesh: link %s deleted", name)

    def _start_dialer(self, link: LinkConfig) -> None:
        assert self._nursery is not None
        scope, ended = self._dialers[link.name] = trio.CancelScope(), trio.Event()
        self._nursery.start_soon(self._dial_in, scope, ended, link)

    async def _stop_dialer(self, name: str) -> None:
        """Cancel a link's dialer and wait until it has ended (a bridge's shielded
        last save of its push position included)."""
        dialer = self._dialers.pop(name, None)
        if dialer is not None:
            scope, ended = dialer
            scope.cancel()
            await ended.wait()

    async def _dial_in(self, scope: trio.CancelScope, ended: trio.Event, link: LinkConfig) -> None:
        try:
            with scope:
                await self._dial_forever(link)
        finally:
            ended.set()

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    # -- running ---------------------------------------------------------------------

    async def run(self) -> None:
        """Dial every configured link and keep checkpoints, until cancelled."""
        try:
            async with background_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._checkpoints)
                nursery.start_soon(self._cursor_filters_loop)
                for link in list(self.links.values()):
                    self._start_dialer(link)
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._checkpoint()

    async def _load_cursor_filters(self) -> None:
        self.cursor_filters = {c.topic_filter or "#" for c in await self.broker.cursors()}

    async def _cursor_filters_loop(self) -> None:
        """Look for cursors created or deleted, also while no link is up: the first
        interest a link sends when it (re)connects is built from them, and the source
        skips for good what that interest leaves out."""
        while True:
            await trio.sleep(CURSOR_POLL_SECONDS)
            await self._load_cursor_filters()

    async def _checkpoints(self) -> None:
        while True:
            await trio.sleep(CHECKPOINT_SECONDS)
            if self.positions.dirty:
                await self._checkpoint()

    async def _checkpoint(self) -> None:
        offset = self.positions.safe_offset(self.broker.end_offset)
        await self.broker.save_state(NAMESPACE, {CHECKPOINT_KEY: self.positions.checkpoint(offset)})

    def peer_lock(self, peer: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Appends of one peer's events, one at a time (dedup check and append as one)."""
        return held(self._peer_locks[peer])

    # -- topology (transit links) ----------------------------------------------------

    def view_for(self, session: LinkSession | None) -> list[str]:
        """This node and what it reaches over its transit links other than ``session``."""
        return reachable(
            self.node_id,
            [s.peer_nodes for s in self.sessions.values() if s.transit and s is not session],
        )

    def interest_for(self, session: LinkSession, pull: Sequence[str]) -> list[str]:
        """What ``session`` should carry to this node under live interest (its pull,
        or on the remote side the dialer's push): the filters this node's subscribers
        and durable cursors want, and those of peers this node sends to over transit links (their
        advertised interest, or their static filters), narrowed to ``pull``
        (a wanted filter inside a pull filter is kept; one that overlaps a pull filter
        only partly keeps that pull filter)."""
        wanted = self.broker.subscription_filters() | self.cursor_filters
        for other in self.sessions.values():
            route = other.pull_route or other.push_route
            if other is session or route is None or route.mode != "transit":
                continue
            wanted.update(other.interest if other.interest is not None else route.filters)
        out: set[str] = set()
        for want in wanted:
            for pull_filter in pull:
                if covers(pull_filter, want):
                    out.add(want)
                elif overlaps(pull_filter, want):
                    out.add(pull_filter)
        return sorted(out)

    def check_cycle(self, session: LinkSession) -> None:
        """A transit peer reported what it reaches (``$link/nodes``): if this node reaches
        any of those nodes over its other links too, the links form a cycle (two links
        that started at the same moment both passed the check at their start), and
        this link closes; it is redialed after a jittered delay, when the handshake
        sees the whole tree and refuses it, or the other link of the pair."""
        if not session.transit:
            return
        common = closes_cycle(self.view_for(session), session.peer_nodes)
        if common:
            raise LinkRefused(
                ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
                f"the link closes a cycle through {', '.join(sorted(common))}",
            )

    def topology_changed(self, changed: LinkSession | None = None) -> None:
        """Tell every transit peer what it now reaches through this node."""
        if self._nursery is None:
            return
        for session in list(self.sessions.values()):
            if session.transit and session is not changed:
                session.start_soon(self._send_nodes, session)

    async def _send_nodes(self, session: LinkSession) -> None:
        with contextlib.suppress(*STREAM_ERRORS, trio.BrokenResourceError):
            await session.send_nodes(self.view_for(session))

    def _check_peer(self, peer: str, transit: bool, their_nodes: Sequence[str]) -> None:
        if peer == self.node_id:
            raise LinkRefused(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "a link to itself")
        if peer in self.sessions:
            raise LinkRefused(
                ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
                f"{self.node_id} already has a link with {peer} (one link per pair of nodes)",
            )
        if transit:
            common = closes_cycle(self.view_for(None), their_nodes)
            if common:
                raise LinkRefused(
                    ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
                    f"the link would close a cycle through {', '.join(sorted(common))}",
                )

    def report_gap(self, status: LinkStatus, peer: str, body: dict[str, Any]) -> None:
        start, end = body.get("from"), body.get("to")
        count = end - start if isinstance(start, int) and isinstance(end, int) else 0
        status.gaps += 1
        status.gap_events += max(0, count)
        log.error(
            "mesh: link %s: GAP: %s's events %s..%s are gone (%s) and were never received",
            status.name,
            peer,
            start,
            end,
            body.get("reason"),
        )

    async def on_start(self, session: LinkSession, body: dict[str, Any]) -> None:
        """``$link/start`` from the dialer: start the pull source (set up by accept)."""
        if session.pull_route is not None:
            session.start_source(
                session.pull_route, wire.position(body, "pull_from"), session.pull_access
            )

    # -- accepting (the remote side) -------------------------------------------------

    async def accept(
        self,
        stream: trio.abc.Stream,
        decoder: Decoder,
        connect: Connect,
        access: Access,
        early: list[Packet],
    ) -> None:
        """Serve a link a peer dialed (the MQTT listener's hook); never raises."""
        channel = LinkChannel(stream, decoder)
        channel.pending = list(early)
        status: LinkStatus | None = None
        try:
            await channel.send(Connack(ReasonCode.SUCCESS))
            hello = wire.parse_control(await channel.receive_publish(wire.HELLO, HANDSHAKE_SECONDS))
            peer, link_name = hello.get("node"), hello.get("link")
            if not isinstance(peer, str) or not NODE_ID_PATTERN.fullmatch(peer):
                raise wire.LinkProtocolError("hello: a bad node id")
            if not isinstance(link_name, str) or not NODE_ID_PATTERN.fullmatch(link_name):
                raise wire.LinkProtocolError("hello: a bad link name")
            incarnation = hello.get("incarnation")
            if not isinstance(incarnation, str):
                raise wire.LinkProtocolError("hello: no incarnation")
            mode = hello.get("mode", "local")
            if mode not in ("local", "transit"):
                raise wire.LinkProtocolError(f"hello: unknown mode {mode!r}")
            pull, push = wire.string_list(hello, "pull"), wire.string_list(hello, "push")
            nodes = wire.string_list(hello, "nodes")
            for topic_filter in (*pull, *push):
                validate_topic_filter(topic_filter)
                if access.grant(Right.LINK, topic_filter) is Grant.DENIED:
                    raise LinkRefused(
                        ReasonCode.NOT_AUTHORIZED,
                        f"user {access.owner} has no link right for {topic_filter!r}",
                    )
            hop_limit = _int(hello, "hop_limit", 8, 1, 64)
            window = _int(hello, "window", 8, 1, 1000)
            transit = mode == "transit"
            self._check_peer(peer, transit, nodes)
            name = f"{peer}:{link_name}"
            status = self.statuses[name] = LinkStatus(
                name, "inbound", "", mode, tuple(pull), tuple(push), peer
            )
            session = LinkSession(
                self,
                channel,
                status,
                peer,
                incarnation,
                window=window,
                batch_events=_int(hello, "batch_events", 1000, 1, 100_000),
                heartbeat_seconds=float(_int(hello, "heartbeat_ms", 2000, 100, 60_000)) / 1000,
                transit=transit,
                push_access=access if push else None,
            )
            session.peer_nodes = set(nodes)
            session.pull_route = Route(peer, tuple(pull), mode, hop_limit) if pull else None
            session.pull_access = access
            # live interest for the dialer's push: sent with the welcome (its source
            # starts with it), then as it changes
            advertise = tuple(push) if push and hello.get("push_interest") is True else None
            interest = session.wanted(advertise) if advertise is not None else None
            if interest is not None:
                session.advertised(interest)
            await channel.send(
                wire.control(
                    wire.WELCOME,
                    {
                        "v": wire.VERSION,
                        "node": self.node_id,
                        "incarnation": self.identity.incarnation,
                        "nodes": self.view_for(None),
                        "push_from": wire.position_body(self.positions.sender(peer))
                        if push
                        else None,
                        "interest": interest,
                    },
                )
            )
            await self._serve(session, None, None, advertise)
        except LinkRefused as exc:
            log.warning("mesh: refused a link: %s", exc.reason)
            if status is not None:
                status.state, status.last_error = "refused", exc.reason
            with contextlib.suppress(*STREAM_ERRORS), trio.move_on_after(1):
                await channel.send(Disconnect(exc.code, Properties(reason_string=exc.reason)))
        except (wire.LinkProtocolError, MQTTProtocolError, ValueError) as exc:
            log.warning("mesh: inbound link closed: protocol error: %s", exc)
            await _protocol_error(channel, exc)
        except (LinkClosed, *STREAM_ERRORS) as exc:
            log.info("mesh: inbound link closed: %s", exc)
            if status is not None:
                status.last_error = str(exc)
        except Exception as exc:
            log.exception("mesh: inbound link failed")
            if status is not None:
                status.last_error = f"{type(exc).__name__}: {exc}"

    async def _serve(
        self,
        session: LinkSession,
        route: Route | None,
        start: tuple[str, int] | None,
        advertise: tuple[str, ...] | None = None,
    ) -> None:
        """Run a handshaken session, registered as the peer's one link."""
        peer = session.peer
        self.sessions[peer] = session
        session.status.state = "connected"
        session.status.peer = peer
        session.status.connects += 1
        session.status.last_error = None
        self.topology_changed(session)
        log.info("mesh: link %s with %s connected", session.status.name, peer)
        try:
            await session.run(route, start, advertise)
        except LinkRefused as exc:
            with contextlib.suppress(*STREAM_ERRORS), trio.move_on_after(1):
                await session.channel.send(
                    Disconnect(exc.code, Properties(reason_string=exc.reason))
                )
            raise
        finally:
            if self.sessions.get(peer) is session:
                del self.sessions[peer]
            session.status.state = "disconnected"
            self.topology_changed(None)

    # -- dialing (the configured side) -----------------------------------------------

    async def _dial_forever(self, link: LinkConfig) -> None:
        status = self.statuses[link.name]
        delay = link.reconnect_seconds / 10
        while True:
            status.state = "connecting" if status.state != "refused" else "refused"
            try:
                await self._dial(link, status)
                delay = link.reconnect_seconds / 10
            except LinkRefused as exc:
                if status.last_error != exc.reason:
                    log.warning("mesh: link %s refused: %s", link.name, exc.reason)
                status.state, status.last_error = "refused", exc.reason
            except (LinkClosed, wire.LinkProtocolError, MQTTProtocolError, *STREAM_ERRORS) as exc:
                if status.last_error != str(exc):
                    log.info("mesh: link %s: %s", link.name, exc)
                status.last_error = str(exc)
                if status.state != "refused":
                    status.state = "disconnected"
            except Exception as exc:
                log.exception("mesh: link %s failed", link.name)
                status.state, status.last_error = "disconnected", f"{type(exc).__name__}: {exc}"
            await trio.sleep(delay * random.uniform(0.5, 1.5))  # jitter: no lockstep redials
            delay = min(link.reconnect_seconds, delay * 2)

    async def _dial(self, link: LinkConfig, status: LinkStatus) -> None:
        if link.bridge is not None:
            await run_bridge(self, link, status, _open_stream)
            return
        stream = await _open_stream(link)
        async with stream:
            channel = LinkChannel(stream, Decoder(5, role=Role.CLIENT))
            await channel.send(
                Connect(
                    client_id=f"link-{self.node_id}-{link.name}",
                    protocol_level=5,
                    clean_start=True,
                    keep_alive=0,
                    username=link.username,
                    password=link.password.encode() if link.password is not None else None,
                    properties=Properties(user_properties=((wire.LINK_PROPERTY, "1"),)),
                )
            )
            with trio.move_on_after(HANDSHAKE_SECONDS):
                connack = await channel.receive()
            if not isinstance(connack, Connack):
                raise LinkClosed("no CONNACK")
            if connack.reason_code != ReasonCode.SUCCESS:
                raise LinkRefused(connack.reason_code, f"CONNACK {connack.reason_code.name}")
            transit = link.mode == "transit"
            await channel.send(
                wire.control(
                    wire.HELLO,
                    {
                        "v": wire.VERSION,
                        "node": self.node_id,
                        "incarnation": self.identity.incarnation,
                        "link": link.name,
                        "mode": link.mode,
                        "pull": list(link.remote_pull),
                        "push": list(link.remote_push),
                        "nodes": self.view_for(None),
                        "hop_limit": link.hop_limit,
                        "window": link.window,
                        "batch_events": link.batch_events,
                        "heartbeat_ms": int(link.heartbeat_seconds * 1000),
                        "push_interest": link.push_interest,
                    },
                )
            )
            try:
                welcome = wire.parse_control(
                    await channel.receive_publish(wire.WELCOME, HANDSHAKE_SECONDS)
                )
            except LinkClosed as exc:
                if str(exc).startswith("refused"):
                    raise LinkRefused(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, str(exc)) from None
                raise
            peer = welcome.get("node")
            incarnation = welcome.get("incarnation")
            if not isinstance(peer, str) or not isinstance(incarnation, str):
                raise wire.LinkProtocolError("welcome: no node or incarnation")
            nodes = wire.string_list(welcome, "nodes")
            try:
                self._check_peer(peer, transit, nodes)
            except LinkRefused as exc:
                with trio.move_on_after(1):
                    await channel.send(Disconnect(exc.code, Properties(reason_string=exc.reason)))
                raise
            session = LinkSession(
                self,
                channel,
                status,
                peer,
                incarnation,
                window=link.window,
                batch_events=link.batch_events,
                heartbeat_seconds=link.heartbeat_seconds,
                transit=transit,
            )
            session.peer_nodes = set(nodes)
            session.link = link
            if link.push and link.push_interest and welcome.get("interest") is not None:
                session.set_interest(wire.string_list(welcome, "interest"))
            if link.pull and link.interest:
                # before the start, so the remote's source never runs without it
                await session.advertise_now(link.local_pull)
            if link.pull:
                pull_from = self.positions.sender(peer)
                status.position = pull_from[1] if pull_from else None
                await channel.send(
                    wire.control(wire.START, {"pull_from": wire.position_body(pull_from)})
                )
            route = Route(peer, link.local_push, link.mode, link.hop_limit) if link.push else None
            session.push_route = route
            advertise = link.local_pull if link.interest and link.pull else None
            try:
                await self._serve(session, route, wire.position(welcome, "push_from"), advertise)
            except wire.LinkProtocolError as exc:  # a bad batch, say: the remote hears why
                await _protocol_error(channel, exc)
                raise

    def shown(self) -> list[dict[str, Any]]:
        return [status.shown() for status in self.statuses.values()]


def _int(body: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise wire.LinkProtocolError(f"{key} must be an integer {low}-{high}")
    return value


async def _open_stream(link: LinkConfig) -> trio.abc.Stream:
    if not link.tls:
        return await trio.open_tcp_stream(link.host, link.port)
    context = ssl.create_default_context(cafile=link.tls_ca)
    if link.tls_cert is not None:
        context.load_cert_chain(link.tls_cert, link.tls_key)
    return trio.SSLStream(
        await trio.open_tcp_stream(link.host, link.port),
        context,
        server_hostname=link.tls_server_name or link.host,
        https_compatible=False,
    )


async def _protocol_error(channel: LinkChannel, exc: Exception) -> None:
    """Tell the peer why its link ends: a PROTOCOL_ERROR DISCONNECT naming ``exc`` (if the
    stream still takes it, within a second)."""
    with contextlib.suppress(*STREAM_ERRORS), trio.move_on_after(1):
        await channel.send(
            Disconnect(ReasonCode.PROTOCOL_ERROR, Properties(reason_string=str(exc)[:200]))
        )
