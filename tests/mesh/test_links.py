"""Links between real ``tidelog serve`` nodes on 127.0.0.1, through fault proxies."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.mesh.cluster import Node, check_invariant, start_all, wait_for, wait_heads
from tests.serve_process import run

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
    start_all([core, edge])
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
    table = run("links", "--url", edge.url, cwd=edge.dir).stdout
    assert "node edge" in table and "outbound   connected  core" in table
    metrics = httpx.get(f"{edge.url}/metrics", timeout=10).text
    assert 'tidelog_link_connected{direction="outbound",link="core",peer="core"} 1.0' in metrics
    assert 'tidelog_link_events_out_total{direction="outbound",link="core",peer="core"} 300.0' in (
        metrics
    )
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


def sys_value(node: Node, topic: str) -> bytes:
    """The retained ``$SYS`` snapshot of ``topic`` a new MQTT subscriber gets."""
    import trio

    from tidelog.protocols.mqtt.packets import Publish
    from tidelog.testing.mqtt_client import ClientConnection, Target

    async def read() -> bytes:
        assert node.serve is not None
        target = Target("127.0.0.1", node.serve.ports["MQTT"])
        client = await ClientConnection.open(target, "sys", 4)
        await client.subscribe(topic, 0)
        message = await client.expect(Publish)
        await client.close()
        return bytes(message.payload)

    return trio.run(read)


def test_retention_past_a_links_cursor_is_reported_as_a_gap_and_the_link_goes_on(nodes) -> None:  # type: ignore[no-untyped-def]
    made = nodes("core", "edge")
    core, edge = made["core"], made["edge"]
    # small segments, a small bound, checked often: the core drops events quickly
    core.extra_config = (
        "[storage]\nsegment_bytes = 4096\nretention_bytes = 16384\nretention_check_ms = 100\n"
        "[sys]\ninterval = 0.2\n"
    )
    edge.extra_config = "[sys]\ninterval = 0.2\n"
    proxy = edge.link(core, pull=["commands/edge/#"], heartbeat_seconds=0.5)
    start_all([core, edge])
    core.publish(burst("commands/edge", 10))
    wait_heads({edge: 10})
    proxy.cut()
    for round_ in range(10):  # the core's retention deletes what the edge has not read
        core.publish(burst("commands/edge", 100, 10 + round_ * 100))
    stats = lambda: httpx.get(f"{core.url}/v1/stats", timeout=10).json()["state"]  # noqa: E731
    # a retention pass that brought the log within its bound: none follows while the
    # link catches up (nothing more is published until then), so there is one gap
    wait_for(
        lambda: (state := stats())["first_offset"] > 10 and state["bytes"] <= 16384,
        what="retention past the link's cursor",
    )
    kept = stats()
    proxy.restore()
    wait_heads({edge: 10 + kept["next_offset"] - kept["first_offset"]})
    core.publish(burst("commands/edge", 5, 1010))  # and the link goes on
    wait_heads({edge: 15 + kept["next_offset"] - kept["first_offset"]})
    status = edge.links_status()["core"]
    assert status["gaps"] == 1 and status["gap_events"] > 0
    output = edge.serve.output  # type: ignore[union-attr]
    assert "GAP" in output and "(retention)" in output
    metrics = httpx.get(f"{edge.url}/metrics", timeout=10).text
    assert 'tidelog_link_gaps_total{direction="outbound",link="core",peer="core"} 1.0' in metrics
    wait_for(lambda: sys_value(edge, "$SYS/broker/links/core/gaps") == b"1", what="$SYS gaps")
    gap_events = str(status["gap_events"]).encode()
    assert sys_value(edge, "$SYS/broker/links/core/gap-events") == gap_events
    edge.stop()
    payloads = [e.payload for e in edge.events()]
    # the ten read before the cut, then the gap, then everything from where the core's
    # log now starts, in order, once, up to the last event
    assert payloads[:10] == [f"commands/edge-{i}".encode() for i in range(10)]
    resumed = int(payloads[10].decode().rsplit("-", 1)[1])
    assert resumed - 10 == status["gap_events"]
    assert payloads[10:] == [f"commands/edge-{i}".encode() for i in range(resumed, 1015)]


def test_a_bidirectional_triangle_in_local_mode_delivers_each_event_once(nodes) -> None:  # type: ignore[no-untyped-def]
    made = nodes("a", "b", "c")
    a, b, c = made["a"], made["b"], made["c"]
    for x, y in ((a, b), (b, c), (c, a)):
        x.link(y, pull=["#"], push=["#"], heartbeat_seconds=0.5)
    start_all([a, b, c])
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
        # the default heartbeat (2 s; a link silent for 6 s is dropped): with 0.5 s, a
        # loaded machine dropped a link now and then, the refused one connected in its
        # place, and the events went along another line than the one checked below
        made[dialer].link(made[remote], mode="transit", push=["#"])
    start_all([a, b, c])

    def states() -> dict[str, str]:
        return {n: made[n].links_status()[ring[n]]["state"] for n in ring}

    # Started at once, two links may pass the handshake's cycle check and close when
    # $link/nodes shows the cycle, then race again at their (jittered, 0.5-1.5 x
    # reconnect_seconds) redials: wait until the shape has held for longer than a redial.
    settled: list[tuple[float, dict[str, str]]] = []

    def settled_shape() -> bool:
        now, current = time.monotonic(), states()
        if sorted(current.values()) != ["connected", "connected", "refused"]:
            settled.clear()
        elif not settled or settled[0][1] != current:
            settled[:] = [(now, current)]
        return bool(settled) and now - settled[0][0] > 3.0

    wait_for(settled_shape, what="two links up, the third refused, for 3 s")
    refused = next(n for n, state in states().items() if state == "refused")
    assert "cycle" in made[refused].links_status()[ring[refused]]["last_error"]

    def connects() -> dict[str, int]:
        return {n: made[n].links_status()[ring[n]]["connects"] for n in ring}

    shape = (states(), connects())
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
    # the counts below hold for the shape found above: no link dropped or joined since
    assert (states(), connects()) == shape, "a link dropped or joined while the events flowed"
    for node in (a, b, c):
        node.stop()
    logs = {n.name: n.events() for n in (a, b, c)}
    assert {n: len(events) for n, events in logs.items()} == expected
    check_invariant(logs, lambda node, origin: ["#"] if reaches(origin, node) else [])


def test_a_1_2_4_tree_carries_telemetry_up_and_each_command_to_its_edge(nodes) -> None:  # type: ignore[no-untyped-def]
    made = nodes("core", "r1", "r2", "e1", "e2", "e3", "e4")
    tree = {"r1": ("e1", "e2"), "r2": ("e3", "e4")}
    for region, edges in tree.items():
        # the regions pull every command, narrowed by live interest to their edges'
        made[region].link(
            made["core"],
            mode="transit",
            push=["telemetry/#"],
            pull=["commands/#"],
            interest=True,
            heartbeat_seconds=0.5,
        )
        for edge in edges:
            made[edge].link(
                made[region],
                mode="transit",
                push=["telemetry/#"],
                pull=[f"commands/{edge}/#"],
                heartbeat_seconds=0.5,
            )
    start_all(made.values())
    for region, edges in tree.items():
        wanted = [f"commands/{e}/#" for e in edges]
        wait_for(
            lambda r=region, w=wanted: (
                made["core"].links_status().get(f"{r}:core", {}).get("interest") == w
            ),
            what=f"{region}'s interest at the core",
        )
    edges = [e for pair in tree.values() for e in pair]
    for edge in edges:
        made[edge].publish(burst(f"telemetry/{edge}", 40))
    made["core"].publish([c for e in [*edges, "e9"] for c in burst(f"commands/{e}", 10)])
    wait_heads(
        {
            made["core"]: 50 + 4 * 40,
            made["r1"]: 2 * 40 + 2 * 10,
            made["r2"]: 2 * 40 + 2 * 10,
            **{made[e]: 40 + 10 for e in edges},
        }
    )
    region_of = {e: r for r, pair in tree.items() for e in pair}

    def wants(node: str, origin: str) -> list[str]:
        if node == "core":
            return ["telemetry/#"]
        if node in tree:
            if origin == "core":
                return [f"commands/{e}/#" for e in tree[node]]
            return ["telemetry/#"] if region_of.get(origin) == node else []
        return [f"commands/{node}/#"] if origin == "core" else []

    for node in made.values():
        node.stop()
    check_invariant({name: node.events() for name, node in made.items()}, wants)
    hops = [e.provenance.hop_path for e in made["core"].events() if e.provenance]
    assert {tuple(h.split("/")[0] for h in path) for path in hops} == {
        ("e1", "r1"),
        ("e2", "r1"),
        ("e3", "r2"),
        ("e4", "r2"),
    }


def test_a_link_needs_the_link_right_which_all_does_not_grant(nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tidelog.security.passwords import hash_password

    made = nodes("core", "edge", "other")
    core = made["core"]
    passwords = tmp_path / "passwd"
    passwords.write_text(f"edge:{hash_password('e-pass')}\nother:{hash_password('o-pass')}\n")
    acl = tmp_path / "acl"
    acl.write_text("user edge\nallow link telemetry/#\nuser other\nallow all #\n")
    core.extra_config = (
        f'[security]\npassword_file = "{passwords}"\nacl_file = "{acl}"\n'
        'allow_anonymous = false\nsys_users = ["edge"]\n'
    )
    made["edge"].link(core, push=["telemetry/#"], username="edge", password="e-pass")
    made["other"].link(core, push=["telemetry/#"], username="other", password="o-pass")
    start_all(made.values())
    wait_for(lambda: made["other"].links_status()["core"]["state"] == "refused", what="refused")
    assert "link right" in made["other"].links_status()["core"]["last_error"]
    made["edge"].publish(burst("telemetry", 5))
    made["other"].publish(burst("telemetry", 5))
    wait_for(lambda: made["edge"].links_status()["core"]["events_out"] == 5, what="pushed")


def subscribe_persistently(node: Node, client_id: str, topic_filter: str) -> None:
    """An MQTT 3.1.1 persistent session subscribed to ``topic_filter``, then offline."""
    import trio

    from tidelog.testing.mqtt_client import ClientConnection, Target

    async def run() -> None:
        assert node.serve is not None
        target = Target("127.0.0.1", node.serve.ports["MQTT"])
        client = await ClientConnection.open(target, client_id, 4, clean_start=False)
        await client.subscribe(topic_filter, 1)
        await client.close()

    trio.run(run)


def test_live_interest_brings_a_command_only_where_a_device_subscribed(nodes) -> None:  # type: ignore[no-untyped-def]
    made = nodes("core", "region", "e1", "e2")
    core, region = made["core"], made["region"]
    region.link(core, mode="transit", pull=["commands/#"], interest=True, heartbeat_seconds=0.5)
    for edge in ("e1", "e2"):
        made[edge].link(
            region, mode="transit", pull=["commands/#"], interest=True, heartbeat_seconds=0.5
        )
    start_all(made.values())
    subscribe_persistently(made["e1"], "dev7", "commands/e1/dev7/#")

    def interest_at_core() -> list[str] | None:
        link = core.links_status().get("region:core")
        return None if link is None else link["interest"]

    wait_for(lambda: interest_at_core() == ["commands/e1/dev7/#"], what="interest at the core")
    core.publish(
        burst("commands/e1/dev7", 3) + burst("commands/e1/dev8", 2) + burst("commands/e2/dev9", 2)
    )
    wait_heads({made["e1"]: 3, region: 3})
    # the region's link to the core is cut; meanwhile a second device on e2 subscribes
    # and the core publishes its commands: the reconnecting link advertises the new
    # interest before it pulls, so they arrive
    region.proxies["core"].cut()
    gone = lambda: core.links_status()["region:core"]["state"] != "connected"  # noqa: E731
    wait_for(gone, what="the core sees the link gone")
    subscribe_persistently(made["e2"], "dev9", "commands/e2/#")
    wait_for(
        lambda: region.links_status()["e2:region"]["interest"] == ["commands/e2/#"],
        what="e2's interest at the region",
    )
    core.publish(burst("commands/e2/dev9", 2, 2) + burst("commands/e1/dev8", 1, 2))
    region.proxies["core"].restore()
    wait_for(
        lambda: interest_at_core() == ["commands/e1/dev7/#", "commands/e2/#"],
        what="the interest resynchronised at the core",
    )
    wait_heads({made["e2"]: 2, region: 5})
    assert made["e1"].head() == 3
    for node in made.values():
        node.stop()
    topics = {name: [e.topic for e in node.events()] for name, node in made.items()}
    assert topics["e1"] == ["commands/e1/dev7/0", "commands/e1/dev7/1", "commands/e1/dev7/2"]
    assert topics["e2"] == ["commands/e2/dev9/2", "commands/e2/dev9/3"]
    assert topics["region"] == topics["e1"] + topics["e2"]


def test_a_link_added_at_run_time_remaps_prefixes_survives_a_restart_and_is_removed(  # type: ignore[no-untyped-def]
    nodes, tmp_path: Path
) -> None:
    from tests.mesh.cluster import FaultProxy
    from tidelog.security.passwords import hash_password

    made = nodes("core", "edge")
    core, edge = made["core"], made["edge"]
    passwords = tmp_path / "passwd"
    passwords.write_text(f"ops:{hash_password('ops-pass')}\n")
    edge.extra_config = (
        f'[security]\npassword_file = "{passwords}"\nadmin_users = ["ops"]\n'
        "allow_anonymous = true\n"
    )
    # a link from the file (to nowhere): REST cannot change it
    edge.links.append({"name": "fixed", "url": "mqtt://127.0.0.1:1", "push": ["x/#"]})
    start_all([core, edge])
    proxy = FaultProxy()  # the run-time link's own path to core
    edge.proxies["core-rt"] = proxy
    core.inbound.append(proxy)
    proxy.target = core.serve.ports["MQTT"] if core.serve else None
    table = {"url": proxy.url, "pull": ["cmd/#"], "push": ["t/#"], "heartbeat_seconds": 0.5}
    table |= {"local_prefix": "site/", "remote_prefix": "edges/e1/"}
    url = f"{edge.url}/v1/links/rt"
    assert httpx.put(url, json=table, timeout=10).status_code == 403  # anonymous: not admin
    ops = ("ops", "ops-pass")
    conflict = httpx.put(f"{edge.url}/v1/links/fixed", json=table, auth=ops, timeout=10)
    assert conflict.status_code == 409 and "configuration file" in conflict.text
    bad = httpx.put(url, json={**table, "mode": "flood"}, auth=ops, timeout=10)
    assert bad.status_code == 400 and "mode" in bad.text
    args = ["links", "add", "rt", "--remote-url", proxy.url, "--pull", "cmd/#", "--push", "t/#"]
    args += ["--local-prefix", "site/", "--remote-prefix", "edges/e1/"]
    args += ["--heartbeat-seconds", "0.5", "--url", edge.url, "--user", "ops", "--password-stdin"]
    added = run(*args, cwd=edge.dir, input="ops-pass\n")
    assert added.returncode == 0, added.stderr
    assert '"remote_prefix": "edges/e1/"' in added.stdout and '"owner": "ops"' in added.stdout
    wait_for(lambda: edge.links_status()["rt"]["state"] == "connected", what="connected")
    edge.publish(burst("site/t", 30) + burst("t", 5))  # pushed: site/t/# (local_prefix)
    core.publish(burst("edges/e1/cmd", 20) + burst("edges/e2/cmd", 5))
    wait_heads({core: 25 + 30, edge: 35 + 20})
    edge.stop()  # the link is persisted: dialed again after the restart
    edge.start()
    proxy.target = core.serve.ports["MQTT"] if core.serve else None
    wait_for(lambda: edge.links_status().get("rt", {}).get("state") == "connected", what="again")
    core.publish(burst("edges/e1/cmd", 10, start=20))
    wait_heads({edge: 35 + 30})
    removed = run(
        "links",
        "remove",
        "rt",
        "--url",
        edge.url,
        "--user",
        "ops",
        "--password-stdin",
        cwd=edge.dir,
        input="ops-pass\n",
    )
    assert removed.returncode == 0, removed.stderr
    assert "rt" not in edge.links_status()
    assert httpx.delete(f"{edge.url}/v1/links/rt", auth=ops, timeout=10).status_code == 404
    core.stop()
    edge.stop()
    core_got = [(e.topic, e.payload) for e in core.events() if e.provenance is not None]
    assert core_got == [(f"edges/e1/{t[len('site/') :]}", p) for t, p in burst("site/t", 30)]
    edge_got = [(e.topic, e.payload) for e in edge.events() if e.provenance is not None]
    assert edge_got == [(f"site/{t[len('edges/e1/') :]}", p) for t, p in burst("edges/e1/cmd", 30)]


def test_a_star_survives_a_half_open_link_to_one_edge(nodes) -> None:  # type: ignore[no-untyped-def]
    """Three edges around a core; one edge's path goes silent (a blackhole: the
    connection stays open, nothing arrives). Heartbeats close it on both sides, the
    edge redials once the path is back, and every node still has exactly its events."""
    made = nodes("core", "e1", "e2", "e3")
    core = made["core"]
    for name in ("e1", "e2", "e3"):
        made[name].link(
            core, pull=[f"commands/{name}/#"], push=["telemetry/#"], heartbeat_seconds=0.5
        )
    start_all(made.values())
    for name in ("e1", "e2", "e3"):
        made[name].publish(burst(f"telemetry/{name}", 100))
        core.publish(burst(f"commands/{name}", 50))
    wait_heads({core: 300 + 150, **{made[n]: 150 for n in ("e1", "e2", "e3")}})
    proxy = made["e2"].proxies["core"]
    proxy.mode = "blackhole"
    made["e2"].publish(burst("telemetry/e2", 100, 100))
    core.publish(burst("commands/e2", 50, 50) + burst("commands/e1", 50, 50))
    wait_for(lambda: made["e2"].links_status()["core"]["state"] != "connected", 30, "silence")
    wait_for(lambda: core.links_status()["e2:core"]["state"] != "connected", 30, "both sides")
    wait_heads({made["e1"]: 100 + 100})  # e1's link goes on meanwhile
    proxy.mode = "pass"
    wait_heads({core: 400 + 250, made["e2"]: 200 + 100})
    for node in made.values():
        node.stop()
    check_invariant(
        {name: node.events() for name, node in made.items()},
        lambda node, origin: (
            ["telemetry/#"]
            if node == "core"
            else [f"commands/{node}/#"]
            if origin == "core"
            else []
        ),
    )


FAULTS = ("publish-core", "publish-edge", "cut", "restore", "blackhole", "kill-edge", "kill-core")


def test_random_fault_schedules_lose_and_repeat_nothing(nodes) -> None:  # type: ignore[no-untyped-def]
    """Hypothesis draws short schedules of bursts and faults (cuts, a blackholed path,
    SIGKILL and restart of either side, mid-transfer) against one pair; after each, once
    the path is restored, both heads are exact, and at the end every event is in its
    receiver's log once, in order."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    core, edge = pair(nodes, batch_events=50)
    proxy = edge.proxies["core"]
    sent = {"core": 0, "edge": 0}

    def step(fault: str) -> None:
        if fault == "publish-core":
            core.publish(burst("commands/edge", 400, sent["core"]))
            sent["core"] += 400
        elif fault == "publish-edge":
            edge.publish(burst("telemetry", 400, sent["edge"]))
            sent["edge"] += 400
        elif fault == "cut":
            proxy.cut()
        elif fault == "restore":
            proxy.restore()
        elif fault == "blackhole":
            proxy.mode = "blackhole"
        else:  # SIGKILL while the last burst may still be crossing, then start again
            node = edge if fault == "kill-edge" else core
            node.kill()
            node.start()

    @settings(
        max_examples=3,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: each run starts real processes
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(st.sampled_from(FAULTS), min_size=3, max_size=5))
    def schedule(faults: list[str]) -> None:
        for fault in ["publish-core", *faults, "publish-edge"]:
            step(fault)
        proxy.restore()
        wait_heads({core: sent["core"] + sent["edge"], edge: sent["edge"] + sent["core"]})

    schedule()
    core.stop()
    edge.stop()
    check_invariant(
        {"core": core.events(), "edge": edge.events()},
        lambda node, origin: PAIR_WANTS[(node, origin)],
    )


def test_live_interest_for_a_push_sends_only_what_the_remote_wants(nodes) -> None:  # type: ignore[no-untyped-def]
    """The remote advertises, of the dialer's ``push`` filters, what its subscribers
    want (persistent sessions count, connected or not, and durable cursors): an
    event nobody there wants
    does not cross; once a subscriber appears it does; and a reconnecting link gets
    the interest that changed while it was away with the welcome."""
    import trio

    from tidelog.protocols.mqtt import Publish
    from tidelog.testing.mqtt_client import ClientConnection, Target

    made = nodes("core", "edge")
    core, edge = made["core"], made["edge"]
    edge.link(core, push=["telemetry/#"], push_interest=True, heartbeat_seconds=0.5)
    start_all([core, edge])
    push_interest = lambda: edge.links_status()["core"]["push_interest"]  # noqa: E731
    wait_for(lambda: push_interest() == [], what="no interest at first")
    subscribe_persistently(core, "dev-p", "telemetry/p")
    wait_for(lambda: push_interest() == ["telemetry/p"], what="the persistent session's")
    edge.publish([*burst("telemetry/a", 5), ("telemetry/p", b"wanted")])
    wait_heads({core: 1})
    assert edge.links_status()["core"]["events_out"] == 1  # telemetry/a/* did not cross
    received: list[str] = []

    async def live_subscriber() -> None:
        assert core.serve is not None
        target = Target("127.0.0.1", core.serve.ports["MQTT"])
        client = await ClientConnection.open(target, "watcher", 5)
        await client.subscribe("telemetry/a/#", 0)
        await trio.to_thread.run_sync(
            wait_for, lambda: "telemetry/a/#" in (push_interest() or []), 30, "live interest"
        )
        await trio.to_thread.run_sync(edge.publish, [("telemetry/a/9", b"now"), ("other/x", b"")])
        with trio.fail_after(30):
            while not received:
                received.extend(
                    p.topic for p in await client.receive_packets() if isinstance(p, Publish)
                )
        await client.close()

    trio.run(live_subscriber)
    assert received == ["telemetry/a/9"]
    wait_for(lambda: push_interest() == ["telemetry/p"], what="the live subscriber gone")
    # resynchronised on reconnect: interest that appears while the link is down
    edge.proxies["core"].cut()
    wait_for(lambda: edge.links_status()["core"]["state"] != "connected", what="cut noticed")
    subscribe_persistently(core, "dev-b", "telemetry/b")
    edge.publish([("telemetry/c", b"unwanted"), ("telemetry/b", b"late")])
    edge.proxies["core"].restore()
    wait_heads({core: 3})
    assert edge.links_status()["core"]["events_out"] == 3
    # a durable cursor at the core counts too (its consumer reads later)
    response = httpx.put(f"{core.url}/v1/cursors/archive", json={"filter": "telemetry/d/#"})
    assert response.status_code == 201, response.text
    wait_for(lambda: "telemetry/d/#" in (push_interest() or []), what="the cursor's interest")
    edge.publish([("telemetry/d/1", b"kept")])
    wait_heads({core: 4})
    # and one created while no link is up (the core looks for cursors only then)
    edge.proxies["core"].cut()
    wait_for(lambda: edge.links_status()["core"]["state"] != "connected", what="cut noticed")
    response = httpx.put(f"{core.url}/v1/cursors/later", json={"filter": "telemetry/e/#"})
    assert response.status_code == 201, response.text
    edge.proxies["core"].restore()
    wait_for(lambda: "telemetry/e/#" in (push_interest() or []), what="the new cursor's")
    edge.publish([("telemetry/e/1", b"kept too")])
    wait_heads({core: 5})
    for node in (core, edge):
        node.stop()
    assert [e.topic for e in core.events()] == [
        "telemetry/p",
        "telemetry/a/9",
        "telemetry/b",
        "telemetry/d/1",
        "telemetry/e/1",
    ]


def test_a_second_link_start_on_one_session_is_a_protocol_error(nodes) -> None:  # type: ignore[no-untyped-def]
    """Each ``$link/start`` would start another source on the session (events sent
    twice, credit shared): the remote answers the second with a DISCONNECT."""
    import trio

    from tidelog.mesh import wire
    from tidelog.mesh.stream import LinkChannel
    from tidelog.protocols.mqtt.decoder import Decoder, Role
    from tidelog.protocols.mqtt.packets import Connack, Connect, Disconnect
    from tidelog.protocols.mqtt.properties import Properties
    from tidelog.protocols.mqtt.reason_codes import ReasonCode

    core = nodes("core")["core"]
    start_all([core])
    core.publish(burst("telemetry", 3))
    assert core.serve is not None
    port = core.serve.ports["MQTT"]

    async def dial() -> Disconnect:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            channel = LinkChannel(stream, Decoder(5, role=Role.CLIENT))
            await channel.send(
                Connect(
                    client_id="link-raw-dialer",
                    protocol_level=5,
                    clean_start=True,
                    keep_alive=0,
                    properties=Properties(user_properties=((wire.LINK_PROPERTY, "1"),)),
                )
            )
            assert isinstance(await channel.receive(), Connack)
            hello = {"v": wire.VERSION, "node": "raw", "incarnation": "i1", "link": "l"}
            await channel.send(wire.control(wire.HELLO, {**hello, "pull": ["telemetry/#"]}))
            await channel.receive_publish(wire.WELCOME, 10)
            start = wire.control(wire.START, {"pull_from": None})
            await channel.send(start)
            await channel.send(start)
            with trio.fail_after(10):
                while True:  # the first start's batches and heads, then the DISCONNECT
                    packet = await channel.receive()
                    if isinstance(packet, Disconnect):
                        return packet

    disconnect = trio.run(dial)
    assert disconnect.reason_code == ReasonCode.PROTOCOL_ERROR
    assert "started already" in (disconnect.properties.reason_string or "")


def test_a_narrow_link_gets_every_event_before_and_after_its_tail_turns_sparse(nodes) -> None:  # type: ignore[no-untyped-def]
    """The edge pulls ``commands/edge/#``: its source at the core keeps a filtered live
    tail while the link takes much of what the core commits, and goes back to the
    log's topic index once it takes little (``LiveTail.sparse``, past 2,000 events);
    either way each event crosses once."""
    core, edge = pair(nodes)
    wait_for(lambda: edge.links_status()["core"]["state"] == "connected", what="connected")
    core.publish(burst("commands/edge", 300) + burst("commands/other", 100))  # 3/4 taken
    wait_heads({edge: 300})
    assert core.links_status()["edge:core"]["sends_from"] == "memory"
    assert edge.links_status()["core"]["sends_from"] == "memory"  # its push: telemetry/#
    for round_ in range(3):  # 1/11 taken: sparse
        core.publish(burst("commands/other", 1000, 100 + round_ * 1000))
        core.publish(burst("commands/edge", 100, 300 + round_ * 100))
    wait_heads({core: 400 + 3 * 1100, edge: 600})
    assert core.links_status()["edge:core"]["sends_from"] == "log"
    core.stop()
    edge.stop()
    check_invariant(
        {"core": core.events(), "edge": edge.events()},
        lambda node, origin: PAIR_WANTS[(node, origin)],
    )
