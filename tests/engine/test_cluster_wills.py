"""Wills on a shared log (engine/wills.py), without processes: two brokers (nodes "a"
and "b") over one real Kafka log, each with its own will store, state writer and
cluster registry, as two ``tidelog serve`` processes would have."""

from __future__ import annotations

import uuid

import trio

import tidelog
from tests.kafka_broker import KafkaCluster
from tests.protocols.mqtt.server_helpers import RawClient
from tests.storage.backends import ManualClock
from tidelog.engine import Broker
from tidelog.engine.cluster import CLIENTS, claim_node
from tidelog.engine.wills import ARMED, NAMESPACE, parse_key
from tidelog.server import RunningServer, ServerConfig, run_server
from tidelog.storage import NewEvent
from tidelog.storage.records import encode_record

WILL = NewEvent("gone/x", b"offline", qos=1)


async def published(broker: Broker) -> list[bytes]:
    """The payloads of the wills in the log so far."""
    return [e.payload for e in (await broker.log.read(0, "gone/#")).events]


async def settled(broker: Broker) -> None:
    """Wait until what the broker's state writer queued is in Kafka (a put after it
    returns once both are durable: the writer keeps order)."""
    await broker._state_writer.put("test.barrier", {"x": None})


async def test_a_late_disarm_by_the_old_node_keeps_the_will_the_new_node_armed(
    kafka: KafkaCluster,
) -> None:
    """Client x is connected to a (will armed), takes its session over on b (which arms
    its will), then a's disarm arrives late: b's armed will stays. b dies: a takes
    b's wills over and publishes x's will exactly once, after its delay."""
    url = kafka.url(f"wills-{uuid.uuid4().hex[:10]}")
    clock = ManualClock()
    options = {"clock": clock, "session_expiry_check_seconds": 0.01}
    async with tidelog.open(url, **options) as a, tidelog.open(url, **options) as b:
        a.cluster.node_id, b.cluster.node_id = "a", "b"
        assert not await a.cluster.claim_client("x")
        armed_on_a = a.arm_will("x", WILL, delay=5)
        await settled(a)
        with trio.fail_after(20):
            assert await b.cluster.claim_client("x")  # a releases it (no connection here)
        armed_on_b = b.arm_will("x", WILL, delay=5)
        await settled(b)
        a.disarm_will(armed_on_a)  # late: after b armed
        await settled(a)
        armed = await a.log.list_state(ARMED)
        assert list(armed) == [armed_on_b]  # compare-and-delete: only a's own key went
        client, owner, waiter = parse_key(armed_on_b)
        assert (client, claim_node(owner or ""), waiter) == ("x", "b", "b")
        # b dies with x connected: a takes its wills over, due 5 s after b was last seen
        assert await a.wills.adopt("b", clock.now) == 1
        await settled(a)
        assert await a.log.list_state(ARMED) == {}
        (pending,) = await a.log.list_state(NAMESPACE)
        client, owner, waiter = parse_key(pending)
        assert (client, claim_node(owner or ""), waiter) == ("x", "b", "a")  # a publishes it
        clock.advance(4000)
        await trio.sleep(0.2)
        assert await published(a) == []  # not before its delay
        clock.advance(1000)
        with trio.fail_after(20):
            while not await published(a):
                await trio.sleep(0.02)
        await trio.sleep(0.3)
        assert await published(a) == [b"offline"]  # exactly once
        assert a.wills.published == 1 and b.wills.published == 0
        with trio.fail_after(20):  # published wills are deleted
            while await a.log.list_state(NAMESPACE):
                await trio.sleep(0.02)


async def test_a_dead_nodes_will_is_not_published_when_its_client_came_back_elsewhere(
    kafka: KafkaCluster,
) -> None:
    """Node b dies holding a pending will of x and an armed will of y; both clients
    connect to a before the wills are due: a takes the wills over but publishes
    neither (their owner changed), and deletes them."""
    url = kafka.url(f"wills-{uuid.uuid4().hex[:10]}")
    clock = ManualClock()
    options = {"clock": clock, "session_expiry_check_seconds": 0.01}
    async with tidelog.open(url, **options) as a, tidelog.open(url, **options) as b:
        a.cluster.node_id, b.cluster.node_id = "a", "b"
        for client in ("x", "y"):
            assert not await b.cluster.claim_client(client)
        b.arm_will("y", NewEvent("gone/y", b"y offline", qos=1), delay=3)
        b.set_will("x", WILL, delay=3)  # x dropped off b: its will waits there
        await settled(b)
        b.wills.close()  # b "dies": its tasks stop, its stored wills stay
        assert await a.wills.adopt("b", clock.now) == 2
        for client in ("x", "y"):  # back, on a (b has no live record: no waiting for it)
            assert await a.cluster.claim_client(client)
        clock.advance(3000)
        with trio.fail_after(20):  # due: each is dropped (its key deleted), not published
            while len(a.wills) or await a.log.list_state(NAMESPACE):
                await trio.sleep(0.02)
        assert await published(a) == []
        assert await a.log.list_state(ARMED) == {}


async def test_a_dead_nodes_overdue_pending_will_is_published_at_once_and_once(
    kafka: KafkaCluster,
) -> None:
    """Node b dies with a pending will that is already due when a takes it over: a
    publishes it at once (its check that the will is still stored waits for the will's
    new key to be written first), exactly once."""
    url = kafka.url(f"wills-{uuid.uuid4().hex[:10]}")
    clock = ManualClock()
    options = {"clock": clock, "session_expiry_check_seconds": 0.01}
    async with tidelog.open(url, **options) as a, tidelog.open(url, **options) as b:
        a.cluster.node_id, b.cluster.node_id = "a", "b"
        assert not await b.cluster.claim_client("x")
        b.set_will("x", WILL, delay=3)
        await settled(b)
        b.wills.close()  # b "dies"
        clock.advance(10_000)  # taken over late: the will was due 7 s ago
        assert await a.wills.adopt("b", clock.now - 8000) == 1
        with trio.fail_after(20):
            while await a.log.list_state(NAMESPACE) or len(a.wills):
                await trio.sleep(0.02)
        assert await published(a) == [b"offline"]


async def test_wills_stored_before_keys_named_nodes_are_still_published(
    kafka: KafkaCluster,
) -> None:
    """An upgrade: a pending will and an armed will stored under plain client ids (the
    old format). A node's load takes the pending one; the armed one of a client whose
    node b died is taken over. Both are published once and their old keys deleted."""
    url = kafka.url(f"wills-{uuid.uuid4().hex[:10]}")
    clock = ManualClock()
    options = {"clock": clock, "session_expiry_check_seconds": 0.01}
    async with tidelog.open(url, **options) as a, tidelog.open(url, **options) as b:
        a.cluster.node_id, b.cluster.node_id = "a", "b"
        assert not await b.cluster.claim_client("y")
        with trio.fail_after(20):  # a sees that y's owner is b
            while await a.log.get_state(CLIENTS, "y") != await b.log.get_state(CLIENTS, "y"):
                await trio.sleep(0.02)
        await a.log.put_state(NAMESPACE, {"x": encode_record(WILL, clock.now + 1000)})
        y_will = NewEvent("gone/y", b"y offline", qos=1)
        await a.log.put_state(ARMED, {"y": encode_record(y_will, 1000)})
        assert await a.wills.load("a") == 1
        assert await a.wills.adopt("b", clock.now) == 1
        clock.advance(1000)
        with trio.fail_after(20):
            while len(await published(a)) < 2 or await a.log.list_state(NAMESPACE):
                await trio.sleep(0.02)
        assert sorted(await published(a)) == [b"offline", b"y offline"]
        assert await a.log.list_state(ARMED) == {}


async def test_a_restarted_node_takes_up_its_wills_before_it_accepts_clients(
    kafka: KafkaCluster,
) -> None:
    """Node n's earlier run left a pending will (x dropped off) and an armed one (y
    still connected when it died). When ``tidelog serve`` starts n again, both wait
    on n by the time its listeners accept: a client reconnecting at once cancels its
    will instead of having it published while it is connected."""
    url = kafka.url(f"wills-{uuid.uuid4().hex[:10]}")
    async with tidelog.open(url) as earlier:
        earlier.cluster.node_id = "n"
        await earlier.cluster.announce("n", {})
        earlier.set_will("x", WILL, delay=60)
        earlier.arm_will("y", NewEvent("gone/y", b"y offline"), delay=60)
        await settled(earlier)
    config = ServerConfig(storage=url, node_id="n", mqtt_port=0, http_port=None, ws_port=None)
    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(run_server, config)
        assert len(running.broker.wills) == 2  # before any client could connect
        assert running.broker.cancel_will("x") and running.broker.cancel_will("y")
        nursery.cancel_scope.cancel()


async def test_a_taken_over_will_is_not_published_when_its_client_is_back_on_its_restarted_node(
    kafka: KafkaCluster,
) -> None:
    """Node b dies with x connected (its will armed); a takes the will over; b restarts
    under the same id and x reconnects to b before the will is due: the will names the
    claim of x's earlier connection, not just node b, so a does not publish it."""
    url = kafka.url(f"wills-{uuid.uuid4().hex[:10]}")
    clock = ManualClock()
    options = {"clock": clock, "session_expiry_check_seconds": 0.01}
    async with tidelog.open(url, **options) as a, tidelog.open(url, **options) as b:
        a.cluster.node_id, b.cluster.node_id = "a", "b"
        assert not await b.cluster.claim_client("x")
        b.arm_will("x", WILL, delay=3)
        await settled(b)
        b.wills.close()  # b "dies"
        assert await a.wills.adopt("b", clock.now) == 1
        assert not await b.cluster.claim_client("x")  # b is back; x reconnects to it
        with trio.fail_after(20):  # a sees x's new claim
            while await a.log.get_state(CLIENTS, "x") != await b.log.get_state(CLIENTS, "x"):
                await trio.sleep(0.02)
        clock.advance(3000)
        with trio.fail_after(20):  # due: dropped (its key deleted), not published
            while len(a.wills) or await a.log.list_state(NAMESPACE):
                await trio.sleep(0.02)
        assert await published(a) == []


async def test_a_pending_will_on_a_node_that_stopped_cleanly_is_taken_over(
    kafka: KafkaCluster,
) -> None:
    """Node b stops cleanly (its record removed) while x's will waits on it: a, the
    node that takes over, finds the will's waiter has no record (twice in a row), takes
    it over and publishes it when due."""
    url = kafka.url(f"wills-{uuid.uuid4().hex[:10]}")
    clock = ManualClock()
    options = {"clock": clock, "session_expiry_check_seconds": 0.01}
    async with tidelog.open(url, **options) as a, tidelog.open(url, **options) as b:
        await a.cluster.announce("a", {})
        await b.cluster.announce("b", {})
        assert not await b.cluster.claim_client("x")
        b.set_will("x", WILL, delay=3)
        await settled(b)
        b.wills.close()
        await b.cluster.leave()  # a clean stop
        with trio.fail_after(20):
            while "b" in await a.log.list_state("cluster") or not await a.wills.waiters():
                await trio.sleep(0.02)
        await a.take_over_dead_nodes()
        assert len(a.wills) == 0  # a first pass only notes it (b may be starting)
        await a.take_over_dead_nodes()
        assert len(a.wills) == 1
        clock.advance(3000)
        with trio.fail_after(20):
            while len(await published(a)) < 1 or await a.log.list_state(NAMESPACE):
                await trio.sleep(0.02)
        assert await published(a) == [b"offline"]


async def test_taking_a_dead_nodes_wills_over_twice_publishes_each_once(
    kafka: KafkaCluster,
) -> None:
    """a takes b's wills over twice at once (both passes read b's keys before their
    deletes are written): the taken-over key keeps the old key's nonce, so the second
    pass finds it waiting already; each will is published once."""
    url = kafka.url(f"wills-{uuid.uuid4().hex[:10]}")
    clock = ManualClock()
    options = {"clock": clock, "session_expiry_check_seconds": 0.01}
    async with tidelog.open(url, **options) as a, tidelog.open(url, **options) as b:
        a.cluster.node_id, b.cluster.node_id = "a", "b"
        assert not await b.cluster.claim_client("x")
        b.set_will("x", WILL, delay=3)
        b.arm_will("y", NewEvent("gone/y", b"y offline", qos=1), delay=3)
        await settled(b)
        b.wills.close()  # b "dies"
        counts: list[int] = []

        async def adopt() -> None:
            counts.append(await a.wills.adopt("b", clock.now))

        async with trio.open_nursery() as nursery:  # both read b's keys before any delete
            nursery.start_soon(adopt)
            nursery.start_soon(adopt)
        assert sum(counts) == 2 and len(a.wills) == 2  # each will taken over once
        clock.advance(3000)
        with trio.fail_after(20):
            while len(a.wills) or await a.log.list_state(NAMESPACE):
                await trio.sleep(0.02)
        await trio.sleep(0.3)
        assert sorted(await published(a)) == [b"offline", b"y offline"]


async def test_a_nodes_claim_tokens_are_dropped_when_their_connections_end(
    kafka: KafkaCluster,
) -> None:
    """A connection's claim token is kept while it lives (its wills are keyed with it)
    and dropped when it ends: a node that many client ids visit keeps none of theirs."""
    url = kafka.url(f"wills-{uuid.uuid4().hex[:10]}")
    config = ServerConfig(storage=url, node_id="n", mqtt_port=0, http_port=None, ws_port=None)
    async with trio.open_nursery() as nursery:
        running: RunningServer = await nursery.start(run_server, config)
        port = running.ports["MQTT"]

        def visit(client_id: str) -> RawClient:
            client = RawClient(port, level=5)
            client.connect(client_id)
            return client

        visitors = [await trio.to_thread.run_sync(visit, f"c{i}") for i in range(3)]
        claims = running.broker.cluster.claims
        assert sorted(claims) == ["c0", "c1", "c2"]
        for visitor in visitors:
            visitor.close()
        with trio.fail_after(20):
            while claims:
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
