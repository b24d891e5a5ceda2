"""The task layout of a connection over real sockets: an idle connection is one task
(the reader); the writer, the session saver and the feed pumps start when there is
something for them to do, and everything still works when they do."""

from __future__ import annotations

from tests.protocols.mqtt.server_helpers import (
    Client,
    RawClient,
    ServerThread,
    clients,
    connection_of,
    wait_for,
)
from tidelog.protocols.mqtt import (
    Connack,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
)
from tidelog.protocols.mqtt.connection import MQTTConnection


def _helper_tasks(server: ServerThread, connection: MQTTConnection) -> int:
    """Tasks the connection runs besides its reader (the nursery's children)."""

    def count() -> int:
        nursery = connection._nursery
        return -1 if nursery is None else len(nursery.child_tasks)

    return server.call_sync(count)


def test_idle_connection_is_one_task_until_it_subscribes(server: ServerThread) -> None:
    raw = RawClient(server.port, 4)
    try:
        raw.connect("idle-then-busy")
        connection = connection_of(server, "idle-then-busy")
        wait_for(lambda: _helper_tasks(server, connection) == 0, what="the writer to end")
        assert connection._feed is None  # no subscription, no feed
        for _ in range(3):  # each PINGREQ starts a writer that answers and ends
            raw.send(Pingreq())
            raw.expect(Pingresp)
            wait_for(lambda: _helper_tasks(server, connection) == 0, what="the writer to end")
        raw.send(Subscribe(1, [Subscription("lazy/+", 1)]))
        assert list(raw.expect(Suback).reason_codes) == [1]
        with clients(Client(server.port)) as (publisher,):
            publisher.publish("lazy/a", b"first", 1)
            message = raw.expect(Publish)
            assert message.payload == b"first"
            raw.send(Puback(message.packet_id))
            assert _helper_tasks(server, connection) >= 1  # the main feed's pump
            publisher.publish("lazy/b", b"second", 1)
            assert raw.expect(Publish).payload == b"second"
    finally:
        raw.close()


def test_publisher_only_connection_has_no_feed(server: ServerThread) -> None:
    with clients(Client(server.port)) as (subscriber,):
        subscriber.subscribe("only/pub", 1)
        raw = RawClient(server.port, 4)
        try:
            raw.connect("only-publishes")
            for n in range(1, 4):
                raw.send(Publish("only/pub", b"%d" % n, 1, packet_id=n))
                assert raw.expect(Puback).packet_id == n
            connection = connection_of(server, "only-publishes")
            assert connection._feed is None
            got = subscriber.receive(3)
            assert [m.payload for m in got] == [b"1", b"2", b"3"]
        finally:
            raw.close()


def test_persistent_session_saved_by_the_lazily_started_saver(server: ServerThread) -> None:
    raw = RawClient(server.port, 4)
    try:
        raw.connect("lazy-saver", clean=False)
        raw.send(Subscribe(1, [Subscription("saved/#", 1)]))
        raw.expect(Suback)
        connection = connection_of(server, "lazy-saver")
        wait_for(lambda: connection._dirty is not None, what="the saver to start")
    finally:
        raw.close()  # no DISCONNECT: the session is kept (it never expires in 3.1.1)
    with clients(Client(server.port)) as (publisher,):
        publisher.publish("saved/x", b"while away", 1)
    again = RawClient(server.port, 4)
    try:
        connack = again.connect("lazy-saver", clean=False)
        assert isinstance(connack, Connack) and connack.session_present
        message = again.expect(Publish)
        assert message.payload == b"while away"
        again.send(Puback(message.packet_id))
    finally:
        again.close()
