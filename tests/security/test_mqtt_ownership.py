"""Issue 20 (security hardening), MQTT: resends pass the receiving connection's ACL
(finding 3), client ids and sessions belong to users (finding 4), name maxima and
per-user quotas at CONNECT, SUBSCRIBE and PUBLISH (finding 7). Real servers on
127.0.0.1, paho clients (3.1.1 and 5) and, where exact packets matter, the raw
client."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.properties import Properties as PahoProperties

from tests.protocols.mqtt.server_helpers import TIMEOUT, Client, RawClient, ServerThread, wait_for
from tests.security.conftest import write_acl
from tests.security.test_mqtt import stored_topics
from tidelog.engine.fanout import FeedSubscription
from tidelog.engine.sessions import NEVER_EXPIRES, Session
from tidelog.protocols.mqtt import (
    Connack,
    Connect,
    Publish,
    Pubrec,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    encode_many,
)
from tidelog.protocols.mqtt.admission import Limits
from tidelog.protocols.mqtt.decoder import Decoder, Role
from tidelog.protocols.mqtt.session import MQTTSession
from tidelog.protocols.mqtt.settings import MQTTSettings
from tidelog.protocols.mqtt.stored_session import Inflight, SubOptions
from tidelog.security import Quota, SecurityConfig
from tidelog.security.acl import ACL, Access, Grant, Principal, Right, parse_acl
from tidelog.server import ServerConfig
from tidelog.storage import Event

V3, V5 = paho.MQTTv311, paho.MQTTv5
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw"}

ACL_OPEN = """\
user alice
allow all alice/#
allow all shared/#
"""
ACL_SECRET = ACL_OPEN + "deny subscribe,read shared/secret/#\n"


def user_client(
    server: ServerThread,
    user: str,
    client_id: str,
    version: int = V5,
    *,
    clean: bool = True,
    session_expiry: int | None = None,
) -> Client:
    """A paho client of ``user``, not yet connected (``connect()`` asserts success)."""
    client = Client(
        server.port,
        client_id,
        version=version,
        clean=clean,
        session_expiry=session_expiry,
        connect=False,
    )
    client.paho.username_pw_set(user, PASSWORDS[user])
    return client


def refused(client: Client) -> int:
    """Connect, expecting a refusal; the CONNACK's reason code (paho turns 3.1.1 return
    codes into the MQTT 5 ones: 2 -> 0x85, 3 -> 0x88, 5 -> 0x87)."""
    kwargs: dict[str, Any] = {}
    if client.version == V5:
        props = PahoProperties(paho.PacketTypes.CONNECT)
        if client.session_expiry is not None:
            props.SessionExpiryInterval = client.session_expiry
        kwargs = {"properties": props, "clean_start": client.clean}
    client.paho.connect("127.0.0.1", client.port, **kwargs)
    client.paho.loop_start()
    try:
        _flags, rc, _props = client.connack.get(timeout=TIMEOUT)
        assert rc.is_failure, "CONNACK accepted"
        return int(rc.value)
    finally:
        client.paho.disconnect()
        client.paho.loop_stop()


@contextmanager
def connected(*made: Client) -> Iterator[tuple[Client, ...]]:
    for client in made:
        client.connect()
    try:
        yield made
    finally:
        for client in made:
            client.disconnect()


def persistent(server: ServerThread, user: str, client_id: str, version: int) -> Client:
    if version == V5:
        return user_client(server, user, client_id, V5, clean=False, session_expiry=3600)
    return user_client(server, user, client_id, V3, clean=False)


def security_config(tmp_path: Path, users_file: Path, acl: str, **extra: Any) -> SecurityConfig:
    return SecurityConfig(
        password_file=str(users_file),
        acl_file=str(write_acl(tmp_path, acl)),
        **extra,
    )


def server_config(
    tmp_path: Path, security: SecurityConfig, storage: str = "memory://"
) -> ServerConfig:
    return ServerConfig(
        storage=storage,
        mqtt_port=0,
        ws_port=0,
        http_port=0,
        mqtt_options={"session_save_interval": 0.05},
        security=security,
    )


ACL_TWO_USERS = """\
user alice
allow all alice/#
user bob
allow all bob/#
"""


@pytest.fixture
def two_users(
    make_server: Callable[..., ServerThread], tmp_path: Path, users_file: Path
) -> ServerThread:
    return make_server(
        server_config(tmp_path, security_config(tmp_path, users_file, ACL_TWO_USERS))
    )


# -- finding 3: a resend passes the ACL of the connection that receives it -----------


def test_a_refused_resend_is_dropped_and_its_packet_id_freed() -> None:
    """Sans-IO: the session's first connection (ACL without the deny rule) leaves a QoS 1
    message on shared/secret/x in flight; the connection resuming it has an ACL that
    denies shared/secret/#: the resend is not sent (DUP or not), its in-flight entry
    and packet identifier are freed, and the stored session no longer lists it."""
    session = Session("dev", expiry_interval=NEVER_EXPIRES, owner="alice")
    sub = FeedSubscription(None, "shared/#", SubOptions(1), 0)  # type: ignore[arg-type]
    secret, other = Event(10, 0, "shared/secret/x", b"s", 1), Event(11, 0, "shared/open/y", b"o", 1)

    def core_for(acl_text: str) -> MQTTSession:
        access = Access(ACL(parse_acl(acl_text)), Principal("alice", "dev"))
        core = MQTTSession(session, 5, access, Limits(100), MQTTSettings(), persistent=True)
        # what Subscriptions.restore does for a stored subscription a deny rule overlaps
        grant = access.grant(Right.SUBSCRIBE, "shared/#")
        assert grant is not Grant.DENIED
        core.planner.check_per_topic("shared/#", grant is Grant.PER_TOPIC)
        return core

    def sent(core: MQTTSession) -> list[Publish]:
        chunks: list[bytes] = []
        core.planner.emit(chunks)
        return Decoder(5, role=Role.CLIENT).feed(b"".join(chunks))  # type: ignore[return-value]

    first = core_for(ACL_OPEN)
    first.planner.own_ready().extend((e, (sub,), first.planner.main) for e in (secret, other))
    assert [p.topic for p in sent(first)] == ["shared/secret/x", "shared/open/y"]
    first.snapshot(handled_end=12)  # neither acknowledged
    assert sorted(Inflight.from_json(session.inflight).out) == [10, 11]

    second = core_for(ACL_SECRET)
    second.restore()
    second.planner.own_ready().extend((e, (sub,), second.planner.main) for e in (secret, other))
    (resent,) = sent(second)
    assert resent.topic == "shared/open/y" and resent.dup
    outstanding = second.planner.outstanding
    assert [entry.offset for entry in outstanding.values()] == [11]
    second.snapshot(handled_end=12)
    assert list(Inflight.from_json(session.inflight).out) == [11]
    assert session.position == 11


def test_a_resumed_session_gets_no_resend_its_acl_now_denies(
    tmp_path: Path, users_file: Path
) -> None:
    """Over sockets, with a restart between the connections (the ACL file changed): an
    unacknowledged QoS 1 message on shared/secret/x is not sent to the resuming
    connection, whose ACL denies shared/secret/#; the allowed one is resent."""
    storage = f"lmdb://{tmp_path}/data"
    first = ServerThread(
        server_config(tmp_path, security_config(tmp_path, users_file, ACL_OPEN), storage)
    ).start()
    try:
        device = RawClient(first.port, 4)
        connack = device.connect("dev", clean=False, username="alice", password=b"alice-pw")
        assert connack.reason_code == ReasonCode.SUCCESS
        device.send(Subscribe(1, [Subscription("shared/#", 1)]))
        assert list(device.expect(Suback).reason_codes) == [1]
        with connected(user_client(first, "alice", "pub", V3)) as (publisher,):
            publisher.publish("shared/secret/x", b"secret", 1)
            publisher.publish("shared/open/y", b"open", 1)
        got = [device.expect(Publish), device.expect(Publish)]  # not acknowledged
        assert [p.topic for p in got] == ["shared/secret/x", "shared/open/y"]
        device.close()
        wait_for(lambda: first.running is not None and "dev" not in _connections(first))
    finally:
        first.stop()

    second = ServerThread(
        server_config(tmp_path, security_config(tmp_path, users_file, ACL_SECRET), storage)
    ).start()
    try:
        device = RawClient(second.port, 4)
        connack = device.connect("dev", clean=False, username="alice", password=b"alice-pw")
        assert connack.reason_code == ReasonCode.SUCCESS and connack.session_present
        with connected(user_client(second, "alice", "pub", V3)) as (publisher,):
            publisher.publish("shared/open/z", b"after", 1)
        resent = device.expect(Publish)
        assert (resent.topic, resent.dup) == ("shared/open/y", True)
        fresh = device.expect(Publish)  # the secret one would have come before it
        assert (fresh.topic, fresh.dup) == ("shared/open/z", False)
        device.close()
    finally:
        second.stop()


def _connections(server: ServerThread) -> dict[str, Any]:
    assert server.running is not None
    mqtt = server.running.context.mqtt
    return server.call_sync(lambda: dict(mqtt.connections))


# -- finding 4: client ids and sessions belong to users ----------------------------------


@pytest.mark.parametrize("version", [V3, V5])
def test_another_user_cannot_take_a_connected_client_id(
    two_users: ServerThread, version: int
) -> None:
    with connected(user_client(two_users, "alice", "dev-1", version)) as (alice,):
        alice.subscribe("alice/#", 1)
        assert refused(user_client(two_users, "bob", "dev-1", version)) == 0x87
        # the owner is still connected and served
        with connected(user_client(two_users, "alice", "pub", version)) as (publisher,):
            publisher.publish("alice/x", b"still here", 1)
        assert alice.receive()[0].payload == b"still here"
        assert alice.disconnects.empty()
        # the owner itself may take its client id over
    again = user_client(two_users, "alice", "dev-1", version)
    with connected(again):
        pass


@pytest.mark.parametrize("version", [V3, V5])
def test_another_user_cannot_resume_or_clear_a_stored_session(
    two_users: ServerThread, version: int
) -> None:
    alice = persistent(two_users, "alice", "dev-2", version)
    with connected(alice):
        alice.subscribe("alice/#", 1)
    with connected(user_client(two_users, "alice", "pub", version)) as (publisher,):
        publisher.publish("alice/offline", b"kept", 1)
    # resume and clean start: both refused, the session untouched
    assert refused(persistent(two_users, "bob", "dev-2", version)) == 0x87
    assert refused(user_client(two_users, "bob", "dev-2", version)) == 0x87
    assert two_users.running is not None
    stored = two_users.running.broker.sessions.get("dev-2")
    assert stored is not None and stored.owner == "alice" and "alice/#" in stored.subscriptions
    back = persistent(two_users, "alice", "dev-2", version)
    with connected(back):
        assert back.flags.session_present
        assert back.receive()[0].payload == b"kept"


def test_another_user_cannot_plant_qos2_packet_ids(two_users: ServerThread) -> None:
    """Bob's CONNECT with alice's client id, followed in the same write by QoS 2
    PUBLISHes, is refused before any of them is taken: alice's next QoS 2 publishes
    with those packet identifiers are all stored."""
    alice = persistent(two_users, "alice", "dev-3", V3)
    with connected(alice):
        pass
    bob = RawClient(two_users.port, 4)
    bob.send_raw(
        encode_many(
            [Connect("dev-3", 4, False, 60, username="bob", password=b"bob-pw")]
            + [Publish("bob/x", b"planted", 2, packet_id=i) for i in (1, 2, 3)],
            4,
        )
    )
    assert bob.expect(Connack).reason_code == ReasonCode.NOT_AUTHORIZED
    assert bob.closed()
    back = persistent(two_users, "alice", "dev-3", V3)
    with connected(back):
        for i in range(3):  # paho numbers them 1, 2, 3
            back.publish(f"alice/q2/{i}", b"mine", 2)
    assert [t for t in stored_topics(two_users) if t.startswith(("alice/", "bob/"))] == [
        "alice/q2/0",
        "alice/q2/1",
        "alice/q2/2",
    ]


def test_an_old_session_without_an_owner_is_claimed_by_the_next_user(
    two_users: ServerThread,
) -> None:
    """A session stored before owners existed (no ``owner`` in its JSON) is claimed by
    the next user who connects with its client id; then it is theirs."""
    raw = Session("legacy", expiry_interval=NEVER_EXPIRES).to_json()
    raw = raw.replace(b',"owner":null', b"")
    assert b"owner" not in raw
    legacy = Session.from_json(raw)
    assert legacy.owner is None
    assert two_users.running is not None
    sessions = two_users.running.broker.sessions
    two_users.call(sessions.save, legacy)
    bob = persistent(two_users, "bob", "legacy", V3)
    with connected(bob):
        assert bob.flags.session_present
    stored = sessions.get("legacy")
    assert stored is not None and stored.owner == "bob"
    assert two_users.call_sync(sessions.owned, "bob") == 1
    assert refused(persistent(two_users, "alice", "legacy", V3)) == 0x87


# -- finding 7: name maxima and per-user quotas -------------------------------------------


@pytest.mark.parametrize(("version", "code"), [(V5, 0x85), (V3, 0x85)])
def test_client_id_too_long(limited: Limited, version: int, code: int) -> None:
    """CONNACK 0x85 Client Identifier not valid (3.1.1: return code 2)."""
    server = limited(max_client_id_bytes=16)
    assert refused(user_client(server, "alice", "x" * 17, version)) == code
    assert refused(user_client(server, "alice", "é" * 9, version)) == code  # 18 bytes
    with connected(user_client(server, "alice", "x" * 16, version)):
        pass


Limited = Callable[..., ServerThread]


@pytest.fixture
def limited(make_server: Callable[..., ServerThread], tmp_path: Path, users_file: Path) -> Limited:
    """``limited(**limits)``: a server with alice and bob and these ``[security]`` limits."""

    def make(**limits: Any) -> ServerThread:
        security = security_config(tmp_path, users_file, ACL_TWO_USERS, **limits)
        return make_server(server_config(tmp_path, security))

    return make


def _puback_codes(client: Client) -> queue.Queue[int]:
    codes: queue.Queue[int] = queue.Queue()
    client.paho.on_publish = lambda c, u, mid, rc, p: codes.put(int(rc.value))
    return codes


def test_topic_too_long_v5(limited: Limited) -> None:
    """MQTT 5: QoS 1/2 get PUBACK/PUBREC 0x90 Topic Name invalid and the connection goes
    on; QoS 0 (no reply) ends it with DISCONNECT 0x90. Nothing is stored."""
    server = limited(max_topic_bytes=32)
    long_topic = "alice/" + "x" * 27
    with connected(user_client(server, "alice", "a1", V5)) as (alice,):
        codes = _puback_codes(alice)
        alice.paho.publish(long_topic, b"no", 1)
        assert codes.get(timeout=TIMEOUT) == 0x90
        alice.publish("alice/" + "x" * 26, b"fits", 1)
        assert codes.get(timeout=TIMEOUT) == 0
        alice.paho.publish(long_topic, b"no", 0)
        assert int(alice.disconnects.get(timeout=TIMEOUT).value) == 0x90
    # QoS 2: PUBREC 0x90 ends the exchange (paho reports the PUBCOMP of its PUBREL)
    raw = RawClient(server.port, 5)
    assert raw.connect("a2", username="alice", password=b"alice-pw").reason_code == 0
    raw.send(Publish(long_topic, b"no", 2, packet_id=7))
    pubrec = raw.expect(Pubrec)
    assert (pubrec.packet_id, pubrec.reason_code) == (7, ReasonCode.TOPIC_NAME_INVALID)
    raw.close()
    assert [t for t in stored_topics(server) if t.startswith("alice/")] == ["alice/" + "x" * 26]


def test_topic_too_long_v3_closes_the_connection(limited: Limited) -> None:
    server = limited(max_topic_bytes=32)
    with connected(user_client(server, "alice", "a1", V3)) as (alice,):
        alice.paho.publish("alice/" + "x" * 27, b"no", 1)
        alice.disconnects.get(timeout=TIMEOUT)
    assert not [t for t in stored_topics(server) if t.startswith("alice/")]


@pytest.mark.parametrize(("version", "code"), [(V5, 0x8F), (V3, 0x80)])
def test_filter_too_long(limited: Limited, version: int, code: int) -> None:
    server = limited(max_filter_bytes=16)
    with connected(user_client(server, "alice", "a1", version)) as (alice,):
        assert alice.subscribe("alice/" + "x" * 11, 1) == (code,)
        assert alice.subscribe("alice/" + "x" * 10, 1) == (1,)


def _quota_count(server: ServerThread, quota: Quota, user: str) -> int:
    assert server.running is not None
    security = server.running.context.security
    return server.call_sync(security.quotas.count, quota, user)


@pytest.mark.parametrize(("version", "code"), [(V5, 0x97), (V3, 0x80)])
def test_subscriptions_per_user(limited: Limited, version: int, code: int) -> None:
    """Counted over every connection of the user; released when a connection ends;
    another user is not affected; a SUBSCRIBE that replaces one is not a new one."""
    server = limited(max_subscriptions_per_user=2)
    one = user_client(server, "alice", "a1", version)
    two = user_client(server, "alice", "a2", version)
    with connected(one, two, user_client(server, "bob", "b1", version)) as (_, _, bob):
        assert one.subscribe("alice/1", 1) == (1,)
        assert two.subscribe("alice/2", 1) == (1,)
        assert two.subscribe("alice/2", 0) == (0,)  # the same filter again
        assert two.subscribe("alice/3", 1) == (code,)
        assert one.subscribe("alice/3", 1) == (code,)
        assert bob.subscribe("bob/1", 1) == (1,)
        one.paho.unsubscribe("alice/1")
        wait_for(lambda: _quota_count(server, Quota.SUBSCRIPTIONS, "alice") == 1)
        assert two.subscribe("alice/3", 1) == (1,)
    wait_for(lambda: _quota_count(server, Quota.SUBSCRIPTIONS, "alice") == 0)


@pytest.mark.parametrize(("version", "code"), [(V5, 0x97), (V3, 0x88)])
def test_persistent_sessions_per_user(limited: Limited, version: int, code: int) -> None:
    """CONNACK 0x97 Quota exceeded (3.1.1: return code 3 Server unavailable) for a new
    persistent session past the quota; resuming one's own and clean sessions go on."""
    server = limited(max_sessions_per_user=1)
    with connected(persistent(server, "alice", "s1", version)):
        pass
    assert refused(persistent(server, "alice", "s2", version)) == code
    with connected(
        persistent(server, "alice", "s1", version), user_client(server, "alice", "s3", version)
    ):
        pass
    with connected(persistent(server, "bob", "s4", version)):
        pass


def test_retained_messages_per_user_v5(limited: Limited) -> None:
    server = limited(max_retained_per_user=1)
    with connected(user_client(server, "alice", "a1", V5)) as (alice,):
        codes = _puback_codes(alice)
        alice.paho.publish("alice/r1", b"one", 1, retain=True)
        assert codes.get(timeout=TIMEOUT) == 0
        alice.paho.publish("alice/r1", b"replaced", 1, retain=True)  # the same topic
        assert codes.get(timeout=TIMEOUT) == 0
        alice.paho.publish("alice/r2", b"two", 1, retain=True)
        assert codes.get(timeout=TIMEOUT) == 0x97
        alice.paho.publish("alice/r2", b"not retained", 1)
        assert codes.get(timeout=TIMEOUT) == 0
    assert server.running is not None
    assert [e.topic for e in server.running.broker.retained.matching("alice/#")] == ["alice/r1"]


def test_retained_messages_per_user_v3_closes_the_connection(limited: Limited) -> None:
    server = limited(max_retained_per_user=1)
    with connected(user_client(server, "alice", "a1", V3)) as (alice,):
        alice.publish("alice/r1", b"one", 1, retain=True)
        alice.paho.publish("alice/r2", b"two", 1, retain=True)
        alice.disconnects.get(timeout=TIMEOUT)
    assert "alice/r2" not in stored_topics(server)


def test_user_property_key_too_long(limited: Limited) -> None:
    """PUBACK 0x83 (PUBACK has no 0x95) with QoS 1; QoS 0: DISCONNECT 0x95."""
    server = limited(max_user_property_key_bytes=8)

    def props(key: str) -> PahoProperties:
        properties = PahoProperties(paho.PacketTypes.PUBLISH)
        properties.UserProperty = [(key, "v")]
        return properties

    with connected(user_client(server, "alice", "a1", V5)) as (alice,):
        codes = _puback_codes(alice)
        alice.paho.publish("alice/p", b"no", 1, properties=props("k" * 9))
        assert codes.get(timeout=TIMEOUT) == 0x83
        alice.paho.publish("alice/p", b"yes", 1, properties=props("k" * 8))
        assert codes.get(timeout=TIMEOUT) == 0
        alice.paho.publish("alice/p", b"no", 0, properties=props("k" * 9))
        assert int(alice.disconnects.get(timeout=TIMEOUT).value) == 0x95
    assert [t for t in stored_topics(server) if t.startswith("alice/")] == ["alice/p"]
