"""Persistent sessions: a durable cursor plus subscriptions plus in-flight state.

A session outlives its connection (MQTT clean session 0, or a v5 session
expiry interval > 0). It does not hold messages: ``position`` is the offset
below which everything has been delivered and acknowledged, and messages that
arrive while the client is away are read from the log when it returns. Each
subscription remembers the offset at which it was made, so catching up never
delivers events from before it existed.

``inflight`` and subscription ``options`` belong to the protocol layer (JSON
values). Sessions are stored as JSON in the log's ``sessions`` state namespace
and expire ``expiry_interval`` seconds after their client disconnected.

``owner`` is the user the session belongs to (``Access.owner``: the user name, or
``anonymous``); only that user may connect with its client id (the MQTT layer's
admission checks it). Sessions stored before owners existed have ``owner`` None:
the next user who connects with the client id claims them.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import attrs
import trio

from tidelog.engine.state_writer import UNREADABLE, StateWriter, report_unreadable
from tidelog.errors import StorageError
from tidelog.storage import EventLog
from tidelog.storage.base import Clock, wall_clock_ms

log = logging.getLogger(__name__)
NAMESPACE = "sessions"
NEVER_EXPIRES = 0xFFFFFFFF
"""MQTT 5's session expiry interval meaning 'never'."""


@attrs.define
class SessionSubscription:
    topic_filter: str
    options: dict[str, Any] = attrs.field(factory=dict)
    created_offset: int = 0


@attrs.define
class Session:
    client_id: str
    expiry_interval: int = 0
    """Seconds the session lives after disconnect (NEVER_EXPIRES: forever)."""
    position: int = 0
    """Every event below this offset was delivered and acknowledged."""
    subscriptions: dict[str, SessionSubscription] = attrs.field(factory=dict)
    inflight: dict[str, Any] = attrs.field(factory=dict)
    disconnected_at: int | None = None
    """ms since the epoch; None while a client is connected."""
    owner: str | None = None
    """The user the session belongs to; None: stored before owners existed (the
    next user to connect claims it)."""

    def expires_at(self) -> float | None:
        if self.disconnected_at is None or self.expiry_interval == NEVER_EXPIRES:
            return None
        return self.disconnected_at + self.expiry_interval * 1000

    def to_json(self) -> bytes:
        return json.dumps(attrs.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Session:
        data = json.loads(raw)
        subs = {
            key: SessionSubscription(**value) for key, value in data.pop("subscriptions").items()
        }
        return cls(subscriptions=subs, **data)


class SessionStore:
    """The broker's persistent sessions, mirrored in memory."""

    def __init__(self, log: EventLog, writer: StateWriter, clock: Clock = wall_clock_ms) -> None:
        self._log = log
        self._writer = writer
        self._clock = clock
        """The broker's clock (ms since the epoch): expiry is measured on it."""
        self._sessions: dict[str, Session] = {}
        self._owned: Counter[str | None] = Counter()
        """Stored sessions per owner (for the per-user session quota)."""
        self._counted_owner: dict[str, str | None] = {}
        """The owner each session is counted for in ``_owned`` (a session's owner may
        be set after it was loaded: an old session claimed)."""
        self.expired = 0
        self._unclean: dict[str, int] = {}
        """Sessions loaded that were connected when the broker stopped (a crash: their
        connection could not save them last), and the log's end at load."""

    async def load(self) -> None:
        """Load every session; ones that were connected when the broker stopped count as
        disconnected now (their expiry starts again), and are noted for
        :meth:`take_unclean`."""
        now = self._clock()
        end = (await self._log.state()).next_offset
        for client_id, raw in (await self._log.list_state(NAMESPACE)).items():
            try:
                session = Session.from_json(raw)
            except UNREADABLE as exc:
                report_unreadable(
                    self._log,
                    NAMESPACE,
                    client_id,
                    exc,
                    "The client starts a fresh session when it connects.",
                )
                continue
            if session.disconnected_at is None:
                session.disconnected_at = now
                self._unclean[client_id] = end
            self._sessions[client_id] = session
            self._count(session)

    async def refresh(self, client_id: str) -> Session | None:
        """On a shared log, re-read the session another node may have saved since (a
        client that moves between nodes); on others the memory copy is the truth."""
        if not self._log.shared:
            return self._sessions.get(client_id)
        raw = await self._log.get_state(NAMESPACE, client_id)
        self._disown(client_id)
        self._sessions.pop(client_id, None)
        if raw is None:
            return None
        try:
            session = Session.from_json(raw)
        except UNREADABLE as exc:
            report_unreadable(self._log, NAMESPACE, client_id, exc, "A fresh session starts.")
            return None
        self._sessions[client_id] = session
        self._count(session)
        return session

    def subscription_filters(self) -> set[str]:
        """Every filter a stored persistent session subscribes to (connected or not)."""
        return {f for session in self._sessions.values() for f in session.subscriptions}

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, client_id: str) -> Session | None:
        return self._sessions.get(client_id)

    def take_unclean(self, client_id: str) -> int | None:
        """If the stored session of ``client_id`` was loaded as left by a crash (its
        client was connected when the broker stopped, so its last changes may not be
        saved) and is not yet taken over: the log's end at load, else None. Asked once:
        the protocol that resumes the session repairs it from the log (what its client
        published after the session's last save is in the log, below that end)."""
        return self._unclean.pop(client_id, None)

    def owned(self, owner: str) -> int:
        """How many stored sessions belong to ``owner``."""
        return self._owned[owner]

    def all(self) -> list[Session]:
        return list(self._sessions.values())

    async def save(self, session: Session) -> None:
        """Store the session durably (coalesced with other saves)."""
        self._disown(session.client_id)
        self._sessions[session.client_id] = session
        self._count(session)
        await self._writer.put(NAMESPACE, {session.client_id: session.to_json()})

    async def delete(self, client_id: str) -> bool:
        self._unclean.pop(client_id, None)
        session = self._sessions.pop(client_id, None)
        existed = session is not None
        if session is not None:
            self._disown(client_id)
            await self._writer.put(NAMESPACE, {client_id: None})
        return existed

    async def expire(self) -> list[str]:
        """Delete sessions whose expiry passed; return their client ids."""
        now = self._clock()
        gone = [
            s.client_id
            for s in self._sessions.values()
            if (at := s.expires_at()) is not None and at <= now
        ]
        if gone and self._log.shared:  # another node may have resumed one of them since
            gone = [
                client_id
                for client_id in gone
                if (fresh := await self.refresh(client_id)) is not None
                and (at := fresh.expires_at()) is not None
                and at <= now
            ]
        if gone:
            for client_id in gone:
                del self._sessions[client_id]
                self._unclean.pop(client_id, None)
                self._disown(client_id)
            await self._writer.put(NAMESPACE, dict.fromkeys(gone))
            self.expired += len(gone)
        return gone

    def _count(self, session: Session) -> None:
        self._counted_owner[session.client_id] = session.owner
        self._owned[session.owner] += 1

    def _disown(self, client_id: str) -> None:
        if client_id not in self._counted_owner:
            return
        owner = self._counted_owner.pop(client_id)
        owned = self._owned
        owned[owner] -= 1
        if owned[owner] <= 0:
            del owned[owner]

    async def run_expiry(self, every: float) -> None:
        """Expire sessions periodically; a failed delete (disk full) is logged, not fatal
        (the stored sessions expire again after a restart)."""
        while True:
            await trio.sleep(every)
            try:
                await self.expire()
            except StorageError as exc:
                log.error("expired sessions could not be deleted (%s); will retry", exc)
