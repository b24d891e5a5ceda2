"""Shared groups across nodes (engine/shares.py), without processes: two nodes' share
bookkeeping and fan-out fed the same log, as each node's tail would feed them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio
import trio.testing

from tidelog.engine.fanout import FanOut, Feed
from tidelog.engine.group_commit import Callback
from tidelog.engine.shares import ClusterShares
from tidelog.storage import EventLog, NewEvent, open_log

KEY = ("workers", "jobs/#")


class Node:
    """One node's view: its shares, its fan-out, and its group feed."""

    def __init__(
        self,
        name: str,
        log: EventLog,
        nursery: trio.Nursery,
        outbox: list[NewEvent],
        *,
        durable: bool = False,
        start: int = 0,
    ) -> None:
        def submit(events: Sequence[NewEvent], callback: Callback) -> None:
            outbox.extend(events)

        self.shares = ClusterShares(log, nursery, submit)
        self.shares.start(name)
        self.fanout = FanOut(log, start)  # ``start``: the log's end when the node starts
        self.feed: Feed = self.fanout.open_feed()
        self.feed.subscribe(KEY[1])
        self.shares.joined(KEY, self.feed, durable=durable)

    def taken(self) -> list[bytes]:
        return [event.payload for event, _ in self.feed.receive_nowait(100_000)]


Route = Callable[[list[NewEvent]], Awaitable[None]]


def routing(
    log: EventLog, nodes: list[Node], outbox: list[NewEvent]
) -> tuple[Route, Callable[[], Awaitable[None]]]:
    """``route(events)``: append, then let every node route the batch as its tail would;
    ``flush()``: route what the nodes queued (their joins and leaves) until none is."""

    async def route(events: list[NewEvent]) -> None:
        stored = await log.append(events)
        for node in nodes:
            node.shares.observe(stored)
            node.fanout.dispatch(stored)

    async def flush() -> None:
        while outbox:
            queued = list(outbox)
            outbox.clear()
            await route(queued)

    return route, flush


async def test_two_nodes_split_a_group_exactly_and_take_back_a_leavers_events() -> None:
    async with open_log("memory://") as log, trio.open_nursery() as nursery:
        outbox: list[NewEvent] = []
        nodes = [Node(name, log, nursery, outbox) for name in ("a", "b")]

        route, flush = routing(log, nodes, outbox)
        await flush()  # both joins
        jobs = [NewEvent("jobs/x", b"%d" % n) for n in range(400)]
        await route(jobs[:200])
        a, b = nodes[0].taken(), nodes[1].taken()
        assert sorted(a + b, key=int) == [e.payload for e in jobs[:200]]  # each exactly once
        assert len(a) > 50 and len(b) > 50  # spread over both nodes

        # b's last member goes having taken 10 of the events b owns from here
        await route(jobs[200:300])
        b_took = [event.payload for event, _ in nodes[1].feed.receive_nowait(10)]
        left_from = nodes[1].feed.handled_end
        nodes[1].feed.close()
        nodes[1].shares.left(KEY, nodes[1].feed)
        await route(jobs[300:400])  # published while the leave is on its way
        await flush()  # the leave
        await trio.testing.wait_all_tasks_blocked()  # a reads b's share back from the log
        a_took = nodes[0].taken()
        assert sorted(a + b + a_took + b_took, key=int) == [e.payload for e in jobs]  # exactly once
        handed = [
            event
            for event in (await log.read(left_from, "jobs/#", limit=1000)).events
            if nodes[0].shares.owner(KEY, event.offset) == "b"
        ]
        assert nodes[0].shares.handed_back == len(handed) > 50
        await route([NewEvent("jobs/x", b"late")])  # b is no member any more: all to a
        assert nodes[0].taken() == [b"late"] and nodes[0].shares.members(KEY, 10**9) == ("a",)
        nursery.cancel_scope.cancel()


async def test_a_durable_group_keeps_what_comes_while_no_node_has_a_member() -> None:
    """A group a persistent session is a member of: its last member node leaves with
    events unfinished, more come while no node has a member; the node whose member
    joins next gets all of them, each once, then the live ones."""
    async with open_log("memory://") as log, trio.open_nursery() as nursery:
        outbox: list[NewEvent] = []
        nodes = [Node("a", log, nursery, outbox, durable=True)]

        route, flush = routing(log, nodes, outbox)
        await flush()  # a joins
        jobs = [NewEvent("jobs/x", b"%d" % n) for n in range(300)]
        await route(jobs[:100])
        a = nodes[0]
        took = [event.payload for event, _ in a.feed.receive_nowait(60)]
        assert a.shares.progress() == [[KEY[0], KEY[1], a.feed.handled_end, True]]
        a.shares.left(KEY, a.feed)  # its (persistent) member went: 40 not taken
        a.feed.close()
        await flush()  # the leave, durable: from now on the group keeps its events
        await route(jobs[100:200])  # no node has a member
        assert a.shares.members(KEY, 10**9) == ()
        nodes.append(Node("b", log, nursery, outbox))  # a node starting: reads the history
        await nodes[1].shares.load((await log.state()).next_offset)
        await flush()  # b joins: it ends the vacancy and takes what was kept
        await trio.testing.wait_all_tasks_blocked()
        kept = nodes[1].taken()
        assert sorted(took + kept, key=int) == [e.payload for e in jobs[:200]]  # each once
        await route(jobs[200:])
        assert nodes[1].taken() == [e.payload for e in jobs[200:]]
        assert nodes[1].shares.handed_back == 140
        nursery.cancel_scope.cancel()


async def test_a_node_that_ends_a_vacancy_and_leaves_at_once_passes_the_kept_events_on() -> None:
    """A durable group with no member: node b's member joins and goes before b has read
    its own join back (it never handed the kept events to anyone): its leave starts at
    the vacancy, so the group keeps them, and node c, joining next, gets them all."""
    async with open_log("memory://") as log, trio.open_nursery() as nursery:
        outbox: list[NewEvent] = []
        nodes = [Node("a", log, nursery, outbox, durable=True)]
        route, flush = routing(log, nodes, outbox)
        await flush()
        nodes[0].shares.left(KEY, nodes[0].feed)  # a's member went, having taken nothing
        nodes[0].feed.close()
        await flush()
        jobs = [NewEvent("jobs/x", b"%d" % n) for n in range(50)]
        await route(jobs)  # kept: no node has a member
        end = (await log.state()).next_offset
        b = Node("b", log, nursery, outbox, start=end)
        nodes.append(b)
        await b.shares.load(end)
        b.shares.left(KEY, b.feed)  # gone before its join was read back
        b.feed.close()
        await flush()  # b's join, then its leave
        end = (await log.state()).next_offset
        c = Node("c", log, nursery, outbox, start=end)
        nodes.append(c)
        await c.shares.load(end)
        await flush()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(c.taken(), key=int) == [e.payload for e in jobs]
        nursery.cancel_scope.cancel()
