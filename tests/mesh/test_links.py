"""Links between real ``tidelog serve`` nodes on 127.0.0.1, through fault proxies."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mesh.cluster import Node, check_invariant, wait_for, wait_heads

pytestmark = pytest.mark.slow


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[dict[str, Node]]:
    made: dict[str, Node] = {}

    def make(*names: str) -> dict[str, Node]:
        for name in names:
            made[name] = Node(tmp_path, name)
        return made

    yield make  # type: ignore[misc]
    for node in made.values():
        if node.serve is not None:
            node.serve.kill()
        for proxy in node.proxies.values():
            proxy.close()


def burst(prefix: str, count: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [(f"{prefix}/{i % 7}", f"{prefix}-{i}".encode()) for i in range(start, start + count)]


def pair(nodes, **extra) -> tuple[Node, Node]:  # type: ignore[no-untyped-def]
    made = nodes("core", "edge")
    core, edge = made["core"], made["edge"]
    edge.link(core, pull=["commands/edge/#"], push=["telemetry/#"], heartbeat_seconds=0.5, **extra)
    core.start()
    edge.start()
    return core, edge


PAIR_WANTS = {("core", "edge"): ["telemetry/#"], ("edge", "core"): ["commands/edge/#"]}


def test_a_pair_pulls_and_pushes_exactly_the_matching_events(nodes) -> None:  # type: ignore[no-untyped-def]
    core, edge = pair(nodes)
    wait_for(lambda: edge.links_status()["core"]["state"] == "connected", what="connected")
    edge.publish(burst("telemetry", 300) + burst("local", 50))
    core.publish(burst("commands/edge", 200) + burst("commands/other", 40))
    wait_heads({core: 240 + 300, edge: 350 + 200})
    status = edge.links_status()["core"]
    assert status["events_out"] == 300 and status["events_in"] == 200
    assert status["peer"] == "core" and status["direction"] == "outbound"
    inbound = core.links_status()["edge:core"]
    assert inbound["state"] == "connected" and inbound["events_in"] == 300
    wait_for(lambda: edge.links_status()["core"]["lag"] == 0, what="no lag")
    core.stop()
    edge.stop()
    check_invariant(
        {"core": core.events(), "edge": edge.events()},
        lambda node, origin: PAIR_WANTS[(node, origin)],
    )


def test_a_link_cut_mid_burst_resumes_without_loss_or_duplicates(nodes) -> None:  # type: ignore[no-untyped-def]
    core, edge = pair(nodes)
    proxy = edge.proxies["core"]
    for round_ in range(6):
        edge.publish(burst("telemetry", 500, round_ * 500))
        core.publish(burst("commands/edge", 300, round_ * 300))
        if round_ == 2:
            proxy.cut()
        if round_ == 4:
            proxy.restore()
    wait_heads({core: 6 * 300 + 6 * 500, edge: 6 * 500 + 6 * 300})
    assert edge.links_status()["core"]["connects"] >= 2
    core.stop()
    edge.stop()
    check_invariant(
        {"core": core.events(), "edge": edge.events()},
        lambda node, origin: PAIR_WANTS[(node, origin)],
    )


def test_sigkill_of_the_receiver_mid_burst_loses_and_repeats_nothing(nodes) -> None:  # type: ignore[no-untyped-def]
    core, edge = pair(nodes, batch_events=50)
    wait_for(lambda: edge.links_status()["core"]["state"] == "connected", what="connected")
    core.publish(burst("commands/edge", 5000))
    wait_for(lambda: edge.head() > 500, what="some events pulled")
    edge.kill()  # SIGKILL between appends and acknowledgements
    core.publish(burst("commands/edge", 1000, 5000))
    edge.start()
    edge.publish(burst("telemetry", 100))
    wait_heads({edge: 6100, core: 6100})
    core.kill()  # and the other side too: the push position is recovered from the log
    edge.publish(burst("telemetry", 100, 100))
    core.start()
    wait_heads({core: 6200})
    core.stop()
    edge.stop()
    check_invariant(
        {"core": core.events(), "edge": edge.events()},
        lambda node, origin: PAIR_WANTS[(node, origin)],
    )


def test_a_replaced_data_directory_is_reported_as_a_gap(nodes) -> None:  # type: ignore[no-untyped-def]
    core, edge = pair(nodes)
    core.publish(burst("commands/edge", 10))
    wait_heads({edge: 10})
    core.stop()
    shutil.rmtree(core.dir / "data")  # a new incarnation of core's log
    core.start()
    core.publish(burst("commands/edge", 3, 10))
    wait_for(lambda: edge.head() >= 13, what="the new log's events")
    status = edge.links_status()["core"]
    assert status["gaps"] == 1
    assert "GAP" in edge.serve.output  # type: ignore[union-attr]
    edge.stop()
    payloads = [e.payload for e in edge.events()]
    assert payloads == [f"commands/edge-{i}".encode() for i in range(13)]


def test_a_bidirectional_triangle_in_local_mode_delivers_each_event_once(nodes) -> None:  # type: ignore[no-untyped-def]
    made = nodes("a", "b", "c")
    a, b, c = made["a"], made["b"], made["c"]
    for x, y in ((a, b), (b, c), (c, a)):
        x.link(y, pull=["#"], push=["#"], heartbeat_seconds=0.5)
    for node in (a, b, c):
        node.start()
    for node in (a, b, c):
        node.publish(burst(f"site/{node.name}", 200))
    wait_heads({a: 600, b: 600, c: 600})
    before = {n.name: n.links_status() for n in (a, b, c)}
    a.publish(burst("site/a", 1, 200))
    wait_heads({a: 601, b: 601, c: 601})
    after = {n.name: n.links_status() for n in (a, b, c)}
    moved = sum(
        after[n][link]["events_in"] - before[n][link]["events_in"]
        for n in after
        for link in after[n]
    )
    assert moved == 2  # the one new event reached b and c, and nothing else moved
    for node in (a, b, c):
        node.stop()
    check_invariant({n.name: n.events() for n in (a, b, c)}, lambda node, origin: ["#"])


def test_a_transit_link_closing_a_cycle_is_refused(nodes) -> None:  # type: ignore[no-untyped-def]
    made = nodes("a", "b", "c")
    a, b, c = made["a"], made["b"], made["c"]
    ring = {"a": "c", "b": "a", "c": "b"}  # each pushes everything to the next
    for dialer, remote in ring.items():
        made[dialer].link(made[remote], mode="transit", push=["#"], heartbeat_seconds=0.5)
    for node in (a, b, c):
        node.start()

    def states() -> dict[str, str]:
        return {n: made[n].links_status()[ring[n]]["state"] for n in ring}

    wait_for(
        lambda: sorted(states().values()) == ["connected", "connected", "refused"],
        what="two links up, the third refused",
    )
    refused = next(n for n, state in states().items() if state == "refused")
    assert "cycle" in made[refused].links_status()[ring[refused]]["last_error"]
    for node in (a, b, c):
        node.publish(burst(f"site/{node.name}", 50))
    # what flows: along the two links that are up, across both (transit)
    pushes = {n: ring[n] for n in ring if n != refused}

    def reaches(origin: str, node: str) -> bool:
        hop = origin
        while hop in pushes:
            hop = pushes[hop]
            if hop == node:
                return True
        return False

    expected = {n: 50 + sum(50 for o in ring if reaches(o, n)) for n in ring}
    wait_heads({made[n]: count for n, count in expected.items()})
    for node in (a, b, c):
        node.stop()
    logs = {n.name: n.events() for n in (a, b, c)}
    assert {n: len(events) for n, events in logs.items()} == expected
    check_invariant(logs, lambda node, origin: ["#"] if reaches(origin, node) else [])
