"""MQTT: authentication, ACL denials, rate limits and limits, with real packets and paho."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest

from tests.protocols.mqtt.server_helpers import Client, RawClient, ServerThread
from tests.security.conftest import write_users
from tidelog.protocols.mqtt import (
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Will,
)
from tidelog.security.passwords import PasswordFile, new_token

V3, V5 = 4, 5


def stored_topics(server: ServerThread) -> list[str]:
    assert server.running is not None
    log = server.running.broker.log

    async def read() -> list[str]:
        result = await log.read(0, None, limit=10_000)
        return [event.topic for event in result.events]

    return server.call(read)


def raw(server: ServerThread, level: int, client_id: str = "c1", **connect: object) -> RawClient:
    client = RawClient(server.port, level)
    connack = client.connect(client_id, **connect)
    client.connack = connack  # type: ignore[attr-defined]
    return client


def login(server: ServerThread, user: str, level: int = V5, client_id: str = "c1") -> RawClient:
    password = {"alice": b"alice-pw", "bob": b"bob-pw", "admin": b"admin-pw"}[user]
    client = raw(server, level, client_id, username=user, password=password)
    assert client.connack.reason_code == ReasonCode.SUCCESS  # type: ignore[attr-defined]
    return client


def subscribe(client: RawClient, *filters: str, packet_id: int = 1) -> list[int]:
    client.send(Subscribe(packet_id, [Subscription(f, 1) for f in filters]))
    return [int(code) for code in client.expect(Suback).reason_codes]


# -- authentication --------------------------------------------------------------------


@pytest.mark.parametrize(("level", "bad"), [(V5, 0x86), (V3, 0x86)])
def test_passwords(secured: ServerThread, level: int, bad: int) -> None:
    login(secured, "alice", level).close()
    for user, password in [("alice", b"wrong"), ("nobody", b"alice-pw")]:
        client = raw(secured, level, username=user, password=password)
        assert client.connack.reason_code == bad  # type: ignore[attr-defined]
        assert client.closed()
    # a user name without a password is refused once a password file is set
    if level == V5:
        client = raw(secured, level, username="alice")
        assert client.connack.reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD  # type: ignore[attr-defined]


def test_paho_clients_log_in(secured: ServerThread) -> None:
    client = Client(secured.port, "alice-1", version=paho.MQTTv5, connect=False)
    client.paho.username_pw_set("alice", "alice-pw")
    client.connect()
    try:
        assert client.subscribe("alice/#", 1) == (1,)
        client.publish("alice/x", b"hi", 1)
        assert client.receive()[0].payload == b"hi"
    finally:
        client.disconnect()


@pytest.mark.parametrize(("level", "refused"), [(V5, 0x87), (V3, 0x87)])
def test_anonymous_refused_when_disabled(
    make_server: Callable[..., ServerThread], users_file: Path, level: int, refused: int
) -> None:
    server = make_server(password_file=str(users_file), allow_anonymous=False)
    client = raw(server, level)
    assert client.connack.reason_code == refused  # type: ignore[attr-defined]  # 3.x: return code 5
    login(server, "bob", level).close()


def test_anonymous_allowed_on_loopback_by_default(secured: ServerThread) -> None:
    client = raw(secured, V5)
    assert client.connack.reason_code == ReasonCode.SUCCESS  # type: ignore[attr-defined]
    # anonymous rules apply: publish public/anon/#, subscribe public/#, nothing else
    assert subscribe(client, "public/#", "alice/#") == [1, ReasonCode.NOT_AUTHORIZED]


def test_a_token_works_as_the_mqtt_password(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    path = write_users(tmp_path, {"carol": "carol-pw"})
    passwords = PasswordFile.load(path)
    token = new_token()
    passwords.add_token("carol", token)
    passwords.save(path)
    server = make_server(password_file=str(path))
    ok = raw(server, V5, username="carol", password=token.encode())
    assert ok.connack.reason_code == ReasonCode.SUCCESS  # type: ignore[attr-defined]
    wrong_user = raw(server, V5, "c2", username="dave", password=token.encode())
    assert wrong_user.connack.reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD  # type: ignore[attr-defined]


@pytest.mark.parametrize(("level", "limited"), [(V5, 0x9F), (V3, 0x88)])
def test_brute_force_is_rate_limited(
    make_server: Callable[..., ServerThread], users_file: Path, level: int, limited: int
) -> None:
    """After 3 failures from an address, attempts from it are refused unchecked, even
    with the right password (3.x: return code 3, server unavailable)."""
    server = make_server(password_file=str(users_file), auth_failures_per_address=3)
    for n in range(3):
        client = raw(server, level, f"g{n}", username="alice", password=b"guess")
        assert client.connack.reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD  # type: ignore[attr-defined]
    client = raw(server, level, "g4", username="alice", password=b"alice-pw")
    assert client.connack.reason_code == limited  # type: ignore[attr-defined]


def test_failures_per_user_lock_that_user_only(
    make_server: Callable[..., ServerThread], users_file: Path
) -> None:
    server = make_server(
        password_file=str(users_file), auth_failures_per_user=2, auth_failures_per_address=100
    )
    for n in range(2):
        client = raw(server, V5, f"g{n}", username="bob", password=b"guess")
        assert client.connack.reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD  # type: ignore[attr-defined]
    client = raw(server, V5, "g3", username="bob", password=b"bob-pw")
    assert client.connack.reason_code == ReasonCode.CONNECTION_RATE_EXCEEDED  # type: ignore[attr-defined]
    login(server, "alice").close()


# -- authorization -----------------------------------------------------------------------


def test_publish_denied_v5(secured: ServerThread) -> None:
    client = login(secured, "bob", V5)
    client.send(Publish("alice/x", b"no", 1, packet_id=1))
    assert client.expect(Puback).reason_code == ReasonCode.NOT_AUTHORIZED
    client.send(Publish("alice/y", b"no", 2, packet_id=2))
    assert client.expect(Pubrec).reason_code == ReasonCode.NOT_AUTHORIZED
    client.send(Publish("shared/ok", b"yes", 1, packet_id=3))
    assert client.expect(Puback).reason_code == ReasonCode.SUCCESS
    assert stored_topics(secured) == ["shared/ok"]


def test_publish_denied_v311_is_acknowledged_and_dropped(secured: ServerThread) -> None:
    """Like mosquitto: a 3.1.1 client gets its PUBACK / PUBREC-PUBCOMP, nothing is stored."""
    client = login(secured, "bob", V3)
    client.send(Publish("alice/x", b"no", 1, packet_id=1))
    assert client.expect(Puback).packet_id == 1
    client.send(Publish("alice/y", b"no", 2, packet_id=2))
    assert client.expect(Pubrec).packet_id == 2
    client.send(Pubrel(2))
    assert client.expect(Pubcomp).packet_id == 2
    client.send(Publish("alice/z", b"no", 0))
    client.send(Publish("shared/ok", b"yes", 1, packet_id=3))
    assert client.expect(Puback).packet_id == 3
    assert stored_topics(secured) == ["shared/ok"]


@pytest.mark.parametrize(("level", "denied"), [(V5, 0x87), (V3, 0x80)])
def test_subscribe_denied(secured: ServerThread, level: int, denied: int) -> None:
    client = login(secured, "alice", level)
    codes = subscribe(client, "alice/#", "bob/#", "#", "shared/secret/x", "shared/+")
    assert codes == [1, denied, denied, denied, 1]
    replay = subscribe(client, "$replay/earliest/alice/#", "$replay/earliest/public/x", packet_id=2)
    assert replay == [1, 1]
    bob = login(secured, "bob", level, "c2")
    # bob may subscribe to bob/# live but has no read right there: no replay
    assert subscribe(bob, "bob/#", "$replay/earliest/bob/#") == [1, denied]


def test_wildcards_never_leak_denied_topics(secured: ServerThread) -> None:
    alice = login(secured, "alice", V5)
    assert subscribe(alice, "shared/#") == [1]  # granted; shared/secret/# is filtered out
    bob = login(secured, "bob", V5, "c2")
    for n, topic in enumerate(["shared/a", "shared/secret/b", "shared/c"], 1):
        bob.send(Publish(topic, topic.encode(), 1, packet_id=n))
        assert bob.expect(Puback).reason_code == ReasonCode.SUCCESS
    got = [alice.expect(Publish).topic for _ in range(2)]
    assert got == ["shared/a", "shared/c"]
    # history through a wildcard replay is filtered the same way
    assert subscribe(alice, "$replay/earliest/shared/#", packet_id=2) == [1]
    replayed = [alice.expect(Publish).topic for _ in range(2)]
    assert replayed == ["shared/a", "shared/c"]
    with pytest.raises(TimeoutError):
        alice.receive(timeout=0.3)


def test_client_id_substitution(secured: ServerThread) -> None:
    device = raw(secured, V5, "dev1")
    device.send(Publish("devices/dev1/t", b"1", 1, packet_id=1))
    assert device.expect(Puback).reason_code == ReasonCode.SUCCESS
    device.send(Publish("devices/dev2/t", b"2", 1, packet_id=2))
    assert device.expect(Puback).reason_code == ReasonCode.NOT_AUTHORIZED
    # a client id with wildcards gains nothing
    sneaky = raw(secured, V5, "+")
    assert subscribe(sneaky, "devices/+/#") == [ReasonCode.NOT_AUTHORIZED]


def test_sys_only_for_configured_users(secured: ServerThread) -> None:
    admin = login(secured, "admin", V5)
    assert subscribe(admin, "$SYS/#") == [1]
    alice = login(secured, "alice", V5, "c2")
    assert subscribe(alice, "$SYS/#", "$SYS/broker/load") == [0x87, 0x87]


def test_loopback_server_opens_sys_to_local_clients(
    make_server: Callable[..., ServerThread],
) -> None:
    """Bound to loopback with anonymous access (the default), every client is local: it
    may watch $SYS, as with mosquitto's default and EMQX's localhost rule."""
    server = make_server()
    client = raw(server, V5)
    assert subscribe(client, "$SYS/#", "$SYS/broker/load", "#") == [1, 1, 1]
    v3 = raw(server, V3)
    assert subscribe(v3, "$SYS/#") == [1]
    response = httpx.get(
        f"http://127.0.0.1:{server.ports('HTTP')}/v1/events", params={"filter": "$SYS/#"}
    )
    assert response.status_code == 200, response.text


def test_sys_users_keep_sys_closed_on_loopback(make_server: Callable[..., ServerThread]) -> None:
    """Naming sys_users means: them only, even on loopback."""
    server = make_server(sys_users=["ops"])
    client = raw(server, V5)
    assert subscribe(client, "$SYS/#", "#") == [0x87, 1]


@pytest.mark.parametrize("level", [V5, V3])
def test_will_topic_must_be_allowed(secured: ServerThread, level: int) -> None:
    client = raw(secured, level, username="bob", password=b"bob-pw", will=Will("alice/will", b"x"))
    assert client.connack.reason_code == ReasonCode.NOT_AUTHORIZED  # type: ignore[attr-defined]


# -- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "quota"), [(V5, 0x97), (V3, 0x80)])
def test_max_subscriptions(
    make_server: Callable[..., ServerThread], level: int, quota: int
) -> None:
    server = make_server(max_subscriptions=2)
    client = raw(server, level)
    assert subscribe(client, "a", "b", "c") == [1, 1, quota]
    assert subscribe(client, "a", packet_id=2) == [1]  # replacing one is fine


@pytest.mark.parametrize(("level", "busy"), [(V5, 0x89), (V3, 0x88)])
def test_max_connections_per_address(
    make_server: Callable[..., ServerThread], level: int, busy: int
) -> None:
    server = make_server(max_connections_per_address=2)
    first, second = raw(server, level, "a"), raw(server, level, "b")
    third = raw(server, level, "c")
    assert third.connack.reason_code == busy  # type: ignore[attr-defined]  # 3.x: code 3
    first.close()
    fourth = None
    for _ in range(50):  # the server notices the close shortly
        fourth = raw(server, level, "d")
        if fourth.connack.reason_code == ReasonCode.SUCCESS:  # type: ignore[attr-defined]
            break
        fourth.close()
    assert fourth is not None and fourth.connack.reason_code == ReasonCode.SUCCESS  # type: ignore[attr-defined]
    second.close()


def test_connack_for_too_many_connections_in_total(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server(max_connections=1)
    first = raw(server, V5, "a")
    assert first.connack.reason_code == ReasonCode.SUCCESS  # type: ignore[attr-defined]
    assert raw(server, V5, "b").connack.reason_code == ReasonCode.SERVER_BUSY  # type: ignore[attr-defined]
