"""A connection's subscriptions: the main feed, shared groups and replays.

Every subscription of a session lives on one of three kinds of feed, each a
:class:`~tidelog.protocols.mqtt.planner.Source` of deliveries:

* the session's **main feed** (opened by the first subscription, or at CONNECT
  for a persistent session, which resumes it from ``session.position``), holding
  every ordinary subscription;
* one feed per **shared subscription** (``$share/<group>/<filter>``), the
  group's: what this member takes and does not finish goes back to the group;
  a **durable** shared subscription (one a persistent session made, and every
  member of such a group) has no feed but the engine's consumer group of the
  cursor ``share:<group>:<filter>``: its position waits in the log while no
  member is connected, a delivery is a lease, and what the client finishes
  (PUBACK, PUBREC, QoS 0 sent) is acknowledged to the group (docs/consumers.md);
* one feed per **replay subscription** (``$replay/<position>/<filter>``, or the
  ``replay-from`` user property), reading the log from a position; not stored.

SUBSCRIBE is checked here (filter length, ACL, subscriptions per connection and
per user: the user's count is brought up to date once per SUBSCRIBE, UNSUBSCRIBE
and resume, never per message); the deliveries are planned
by :mod:`~tidelog.protocols.mqtt.planner`. The shell runs one pump per source
(``start_pump``); this module only opens, changes and closes feeds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Final

from tidelog.engine.fanout import Feed
from tidelog.engine.sessions import SessionSubscription
from tidelog.errors import InvalidPositionError, InvalidTopicError, TidelogError
from tidelog.protocols.mqtt.encoder import encode
from tidelog.protocols.mqtt.packets import Publish, Suback, Subscribe, Unsuback, Unsubscribe
from tidelog.protocols.mqtt.planner import EMPTY, PUB, REPLAY, SHARED, Outbound, Ready, Source
from tidelog.protocols.mqtt.properties import NO_PROPERTIES, Properties
from tidelog.protocols.mqtt.reason_codes import ReasonCode
from tidelog.protocols.mqtt.replies import fitted
from tidelog.protocols.mqtt.session import MQTTSession
from tidelog.protocols.mqtt.stored_session import SubOptions
from tidelog.security import Grant, Right
from tidelog.security.limits import Limits as NameLimits
from tidelog.security.limits import Name, NameTooLongError, Quota, QuotaExceededError, UserQuotas
from tidelog.topics import parse_shared

if TYPE_CHECKING:
    from tidelog.engine.broker import Broker
    from tidelog.engine.consumers import ConsumerGroup
    from tidelog.storage import Event

log = logging.getLogger("tidelog.protocols.mqtt.connection")

REPLAY_PREFIX: Final = "$replay/"
"""3.x form of replay: ``$replay/<position>/<filter>``."""
REPLAY_PROPERTY: Final = "replay-from"
"""MQTT 5 SUBSCRIBE user property naming a replay start position."""
SYS_BACKLOG: Final = 1000
"""Control packets queued past which a connection gets no ``$SYS`` update."""


class Refused(Exception):
    """A subscription refused with a reason code."""

    def __init__(self, code: ReasonCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Subscriptions:
    """The feeds of one connected session (see the module docs)."""

    __slots__ = (
        "bridge",
        "broker",
        "client_id",
        "core",
        "feed",
        "held",
        "max_subscriptions",
        "names",
        "quotas",
        "replays",
        "resend_shared",
        "restore_groups",
        "restore_shared",
        "shared",
        "start_pump",
    )

    def __init__(
        self,
        broker: Broker,
        core: MQTTSession,
        client_id: str,
        max_subscriptions: int,
        start_pump: Callable[[Source], None],
        names: NameLimits | None = None,
        quotas: UserQuotas | None = None,
    ) -> None:
        self.broker = broker
        self.names = names
        """Name maxima (filters); None: not checked."""
        self.quotas = quotas
        """Per-user quotas (live subscriptions); None: not counted."""
        self.held = 0
        """Subscriptions this connection counts for its user in ``quotas``."""
        self.core = core
        self.client_id = client_id
        self.max_subscriptions = max_subscriptions
        self.start_pump = start_pump
        self.bridge = False
        """The client set the 3.x bridge bit: No-Local and Retain-As-Published on every
        subscription (what a broker's bridge expects of its remote)."""
        self.feed: Feed | None = None
        self.shared: dict[str, Source] = EMPTY
        self.replays: dict[str, Source] = EMPTY
        self.restore_shared: list[tuple[str, SubOptions]] | None = None
        """Shared subscriptions of a resumed session, joined once pumps can run."""
        self.resend_shared: dict[str, list[tuple[Event, int]]] = EMPTY
        """Their QoS 2 messages in flight, read back from the log, to send again."""
        self.restore_groups: dict[str, ConsumerGroup | None] = EMPTY
        """Their durable groups, opened before they are joined."""

    def main_feed(self, start: int | None = None) -> Feed:
        """The session's main feed, opened now if it is not (from ``start``, default
        live from now)."""
        feed = self.feed
        if feed is None:
            feed = self.broker.open_feed(start=start, name=f"mqtt:{self.client_id}")
            self.feed = self.core.planner.main.feed = feed
        return feed

    # -- resuming ----------------------------------------------------------------------

    def restore(self) -> None:
        """Subscribe the main feed to a resumed session's stored subscriptions that
        the ACL still allows (shared ones wait for :meth:`start`)."""
        feed = self.feed
        assert feed is not None
        session = self.core.session
        for key, sub in list(session.subscriptions.items()):
            if not self._may_keep(key):
                del session.subscriptions[key]
                continue
            options = SubOptions.from_json(sub.options)
            if key.startswith("$share/"):
                if self.restore_shared is None:
                    self.restore_shared = []
                self.restore_shared.append((key, options))
                continue
            feed.subscribe(key, options, since=sub.created_offset)
            if options.no_local:
                self.core.planner.no_local += 1
        self._account()  # counted, not refused: they were within the quota when made

    async def load_shared_inflight(self) -> None:
        """Read back from the log the shared QoS 2 messages a resumed session had in
        flight: they are completed with this client, never another member
        ([MQTT-4.8.2-4]/[MQTT-4.8.2-5]). One gone from the log meanwhile is finished."""
        pending, self.core.shared_resume = self.core.shared_resume, EMPTY
        kept = {key for key, _ in self.restore_shared or ()}
        for key in kept:
            try:
                consumer = await self._share_group(key)
            except Refused as exc:  # e.g. its cursor was changed meanwhile: live only
                log.warning("shared subscription %r: %s; it is live only", key, exc)
                consumer = None
            if self.restore_groups is EMPTY:
                self.restore_groups = {}
            self.restore_groups[key] = consumer
        for key, entries in pending.items():
            if key not in kept:  # unsubscribed, or no longer authorized
                continue
            for offset, packet_id in entries:
                result = await self.broker.log.read(offset, None, limit=1)
                if result.events and result.events[0].offset == offset:
                    if self.resend_shared is EMPTY:
                        self.resend_shared = {}
                    self.resend_shared.setdefault(key, []).append((result.events[0], packet_id))

    def start(self) -> None:
        """Start delivering (the connection's tasks can run now)."""
        feed = self.feed
        planner = self.core.planner
        if feed is not None and (feed.subscriptions or not feed.live or planner.resume):
            self.start_pump(planner.main)
        if self.restore_shared is not None:
            for key, options in self.restore_shared:
                source = self._join_shared(key, options, self.restore_groups.get(key))
                self._queue_resends(source, self.resend_shared.get(key, ()))
            self.restore_shared = None
            self.resend_shared = EMPTY
            self.restore_groups = EMPTY

    def _queue_resends(self, source: Source, resends: Iterable[tuple[Event, int]]) -> None:
        """Queue a shared subscription's resumed QoS 2 messages, ahead of new ones."""
        planner = self.core.planner
        for event, packet_id in resends:
            delivery: Ready = (event, (), source)
            planner.outstanding[packet_id] = Outbound(
                packet_id, 2, PUB, source, event.offset, delivery
            )
            if planner.shared_resend is EMPTY:
                planner.shared_resend = {}
            planner.shared_resend[(source.key, event.offset)] = packet_id
            planner.own_ready().append(delivery)

    def _may_keep(self, key: str) -> bool:
        """Whether a restored subscription is still allowed (the ACL may have changed)."""
        inner = key
        if key.startswith("$share/"):
            inner = key.split("/", 2)[2] if key.count("/") >= 2 else key
        grant = self.core.access.grant(Right.SUBSCRIBE, inner)
        if grant is Grant.DENIED:
            log.info("stored subscription %r is no longer authorized", key)
            return False
        if grant is Grant.PER_TOPIC:
            self.core.planner.check_per_topic(key, True)
        return True

    # -- SUBSCRIBE ---------------------------------------------------------------------

    async def on_subscribe(self, packet: Subscribe, sys_messages: dict[str, bytes]) -> None:
        """Subscribe, queue the SUBACK, the retained messages and ``$SYS`` values."""
        core = self.core
        props = packet.properties
        identifier = props.subscription_identifiers[0] if props.subscription_identifiers else None
        replay_from = None
        for name, value in props.user_properties:
            if name == REPLAY_PROPERTY:
                replay_from = value
        codes: list[ReasonCode] = []
        problems: list[str] = []
        retained: list[Ready] = []
        sys_filters: list[str] = []
        for sub in packet.subscriptions:
            options = SubOptions(
                sub.qos,
                sub.no_local or self.bridge,
                sub.retain_as_published or self.bridge,
                sub.retain_handling,
                identifier,
            )
            try:
                code = await self._subscribe(sub.topic_filter, options, replay_from, retained)
                codes.append(code)
                if sub.topic_filter.startswith("$"):
                    sys_filters.append(sub.topic_filter)
            except (InvalidPositionError, InvalidTopicError) as exc:
                codes.append(
                    ReasonCode.TOPIC_FILTER_INVALID
                    if isinstance(exc, InvalidTopicError)
                    else ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR
                )
                problems.append(str(exc))
            except Refused as exc:
                codes.append(exc.code)
                problems.append(str(exc))
            self._account()
        suback_props = NO_PROPERTIES
        if problems and core.level == 5 and core.problem_info:
            suback_props = Properties(reason_string="; ".join(problems)[:200])
        suback = Suback(packet.packet_id, codes, suback_props)
        core.control.append(fitted(suback, core.level, core.planner.max_packet))
        if sys_filters and sys_messages:
            self.send_sys(sys_messages, retain=True, filters=sys_filters)
        if retained:
            core.planner.own_ready().extend(retained)
        if core.persistent:
            core.dirty(True)

    def _authorize(self, key: str, topic_filter: str, right: Right) -> None:
        """Filter length, ACL and subscription-count checks (per connection and per
        user); raises Refused (0x8F / 0x87 / 0x97; 3.x: SUBACK 0x80)."""
        if self.names is not None:
            try:
                self.names.check_name(Name.FILTER, key)
            except NameTooLongError as exc:
                raise Refused(ReasonCode.TOPIC_FILTER_INVALID, str(exc)) from None
        _, inner = parse_shared(topic_filter)
        core = self.core
        grant = core.access.grant(right, inner)
        if grant is Grant.DENIED:
            log.info("subscription %r not authorized", key)
            raise Refused(ReasonCode.NOT_AUTHORIZED, f"not authorized to subscribe to {key!r}")
        limit = self.max_subscriptions
        subscriptions = core.session.subscriptions
        if (
            key not in subscriptions
            and key not in self.replays
            and len(subscriptions) + len(self.replays) >= limit
        ):
            raise Refused(ReasonCode.QUOTA_EXCEEDED, f"at most {limit} subscriptions")
        quotas = self.quotas
        if quotas is not None and key not in subscriptions and key not in self.replays:
            try:
                quotas.check(Quota.SUBSCRIPTIONS, core.access.owner)
            except QuotaExceededError as exc:
                raise Refused(ReasonCode.QUOTA_EXCEEDED, str(exc)) from None
        core.planner.check_per_topic(key, grant is Grant.PER_TOPIC)

    def _account(self) -> None:
        """Bring this connection's count in the user's subscription quota up to date
        (after a SUBSCRIBE, UNSUBSCRIBE or resume; not per message)."""
        quotas = self.quotas
        if quotas is None:
            return
        held = len(self.core.session.subscriptions) + len(self.replays)
        if held != self.held:
            quotas.adjust(Quota.SUBSCRIPTIONS, self.core.access.owner, held - self.held)
            self.held = held

    def release_quota(self) -> None:
        """The connection has ended: its subscriptions no longer count for its user."""
        if self.quotas is not None and self.held:
            self.quotas.adjust(Quota.SUBSCRIPTIONS, self.core.access.owner, -self.held)
        self.held = 0

    async def _subscribe(
        self, key: str, options: SubOptions, replay_from: str | None, retained: list[Ready]
    ) -> ReasonCode:
        granted = ReasonCode(options.qos)
        if key.startswith(REPLAY_PREFIX):
            position, sep, inner = key[len(REPLAY_PREFIX) :].partition("/")
            if not sep or not inner:
                raise InvalidTopicError(f"{key!r}: the replay form is $replay/<position>/<filter>")
            self._authorize(key, inner, Right.READ)
            await self._subscribe_replay(key, position, inner, options)
            return granted
        if replay_from is not None:
            self._authorize(key, key, Right.READ)
            await self._subscribe_replay(key, replay_from, key, options)
            return granted
        self._authorize(key, key, Right.SUBSCRIBE)
        group, _ = parse_shared(key)
        session = self.core.session
        if group is not None:
            self._drop_replay(key)
            existing = self.shared.get(key)
            if existing is not None:
                existing.options = options
            else:
                self._join_shared(key, options, await self._share_group(key))
            session.subscriptions[key] = SessionSubscription(key, options.to_json(), 0)
            return granted
        self._drop_replay(key)
        planner = self.core.planner
        feed = self.main_feed()
        old = feed.subscriptions.get(key)
        if old is not None and old.options.no_local:
            planner.no_local -= 1
        sub = feed.subscribe(key, options)
        self.start_pump(planner.main)
        if options.no_local:
            planner.no_local += 1
        session.subscriptions[key] = SessionSubscription(key, options.to_json(), sub.created_offset)
        if options.retain_handling == 0 or (options.retain_handling == 1 and old is None):
            subs = (sub,)
            source = planner.retained
            retained.extend((event, subs, source) for event in self.broker.retained.matching(key))
        return granted

    async def _subscribe_replay(
        self, key: str, position: str, topic_filter: str, options: SubOptions
    ) -> None:
        group, inner = parse_shared(topic_filter)
        if group is not None:
            raise Refused(
                ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
                "a shared subscription cannot replay history",
            )
        start = await self.broker.resolve(position)
        self.unsubscribe(key)
        feed = self.broker.open_feed(start=start, name=f"mqtt:{self.client_id}:{key}")
        feed.subscribe(inner, options, since=start)
        source = Source(REPLAY, feed, options, key)
        if self.replays is EMPTY:
            self.replays = {}
        self.replays[key] = source
        self.start_pump(source)

    def _drop_replay(self, key: str) -> None:
        source = self.replays.pop(key, None)
        if source is not None:
            _close_source(source)
            self.core.planner.forget_source(source)

    async def _share_group(self, key: str) -> ConsumerGroup | None:
        """The durable group of shared subscription ``key``: created when this session
        is persistent, else the existing one, if any (None: the group is live only)."""
        group, inner = parse_shared(key)
        assert group is not None
        try:
            return await self.broker.share_group(group, inner, create=self.core.persistent)
        except TidelogError as exc:
            raise Refused(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, str(exc)) from None

    def _join_shared(
        self, key: str, options: SubOptions, consumer: ConsumerGroup | None = None
    ) -> Source:
        group, inner = parse_shared(key)
        assert group is not None
        if consumer is not None:
            member = f"mqtt:{self.client_id}"
            source = Source(SHARED, None, options, key, group, inner, consumer, member)
        else:
            feed = self.broker.join_shared(group, inner, durable=self.core.persistent)
            source = Source(SHARED, feed, options, key, group, inner)
            # what it took and did not finish counts in the group's progress (a node
            # that dies hands it to the other nodes' members: engine/shares.py)
            feed.holders[source] = partial(self.core.planner.lowest_unfinished, source)
        if self.shared is EMPTY:
            self.shared = {}
        self.shared[key] = source
        self.start_pump(source)
        return source

    def _leave_shared(self, source: Source, *, keep_qos2: bool = False) -> None:
        """Leave a shared group; what this member took but did not finish goes back to
        the group for another member. With ``keep_qos2`` (a persistent session's
        connection ends), QoS 2 messages already sent stay in flight in the session
        instead: only this client may complete them ([MQTT-4.8.2-4]/[MQTT-4.8.2-5])."""
        del self.shared[source.key]
        source.left = True  # its pump gives back what a fetch still under way takes
        if source.scope is not None:
            source.scope.cancel()
        planner = self.core.planner
        consumer = source.consumer
        # a durable group's QoS 2 deliveries to a persistent session are the session's
        # (acknowledged to the group when sent): completed with this client, also after
        # an UNSUBSCRIBE, never handed to another member
        keep_qos2 = keep_qos2 or (consumer is not None and self.core.persistent)
        kept = [
            entry
            for entry in planner.outstanding.values()
            if keep_qos2 and entry.source is source and entry.state == PUB and entry.qos == 2
        ]
        if consumer is not None:  # durable: finished ones acknowledged, the rest released
            planner.forget_source(source)
            for entry in kept:
                planner.outstanding[entry.packet_id] = entry
            if source.settled:
                consumer.ack_nowait(source.settled)
                source.settled.clear()
            if source.refused:  # the release below gives these back too
                source.refused.clear()
            consumer.release(source.member)
            return
        taken = {entry.offset for entry in kept}
        unfinished, seen = [], set()
        for delivery in planner.unfinished(source):
            offset = delivery[0].offset
            if offset not in taken and offset not in seen:
                seen.add(offset)
                unfinished.append(delivery)
        planner.forget_source(source)
        for entry in kept:
            planner.outstanding[entry.packet_id] = entry
        if source.feed is not None:
            source.feed.holders.pop(source, None)
        if source.feed is not None and unfinished:
            unfinished.sort(key=lambda d: d[0].offset)
            source.feed.requeue(unfinished)
        self.broker.leave_shared(source.group, source.inner)

    # -- UNSUBSCRIBE -------------------------------------------------------------------

    def on_unsubscribe(self, packet: Unsubscribe) -> None:
        core = self.core
        codes = [
            ReasonCode.SUCCESS if self.unsubscribe(key) else ReasonCode.NO_SUBSCRIPTION_EXISTED
            for key in packet.topic_filters
        ]
        core.control.append(encode(Unsuback(packet.packet_id, codes), core.level))
        self._account()
        if core.persistent:
            core.dirty(True)

    def unsubscribe(self, key: str) -> bool:
        session = self.core.session
        planner = self.core.planner
        feed = self.feed
        if key in self.replays:
            self._drop_replay(key)
            return True
        shared = self.shared.get(key)
        if shared is not None:
            self._leave_shared(shared)
            session.subscriptions.pop(key, None)
            return True
        if feed is None or (sub := feed.subscriptions.get(key)) is None:
            return False
        planner.check_per_topic(key, False)
        if sub.options.no_local:
            planner.no_local -= 1
        feed.unsubscribe(key)
        session.subscriptions.pop(key, None)
        return True

    def close_shared_and_replays(self) -> None:
        """Closing: leave the shared groups (giving back what is unfinished, but for a
        persistent session's QoS 2 messages in flight), close the replay feeds."""
        for source in list(self.shared.values()):
            self._leave_shared(source, keep_qos2=self.core.persistent)
        for source in self.replays.values():
            if source.feed is not None:
                source.feed.close()

    # -- $SYS ---------------------------------------------------------------------------

    def send_sys(
        self, messages: dict[str, bytes], *, retain: bool, filters: list[str] | None = None
    ) -> bool:
        """Queue ``$SYS`` messages (QoS 0, outside the log) for matching subscriptions;
        True if any was queued.

        ``filters``: only these (just subscribed); default every subscription. A
        client with a backlog of control packets gets none (they are refreshed
        every interval anyway).
        """
        feed = self.feed
        control = self.core.control
        if feed is None or len(control) > SYS_BACKLOG:
            return False
        subs = [
            sub
            for key, sub in feed.subscriptions.items()
            if key.startswith("$") and (filters is None or key in filters)
        ]
        if not subs:
            return False
        level = self.core.level
        for topic, payload in messages.items():
            if any(sub.matches(topic) for sub in subs):
                control.append(encode(Publish(topic, payload, 0, retain), level))
        return True


def _close_source(source: Source) -> None:
    if source.scope is not None:
        source.scope.cancel()
    if source.feed is not None:
        source.feed.close()
