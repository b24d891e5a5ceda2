"""The console's overview on a cluster: every node serving the shared Kafka log, with
its state, seen from any node in a real Chromium; a node that dies is shown down."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.browser import Console, chromium
from tests.cluster.conftest import start_node
from tests.kafka_broker import KafkaCluster
from tests.protocols.mqtt.server_helpers import Client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def test_the_overview_lists_the_clusters_nodes_and_shows_a_dead_one_down(
    browser: Browser, kafka: KafkaCluster, tmp_path: Path
) -> None:
    url = kafka.url("console-cluster")
    first = start_node(tmp_path, url, "node-a")
    second = start_node(tmp_path, url, "node-b")
    device = Client(second.ports["MQTT"], "sensor-on-b")
    shots = Path(os.environ.get("TIDELOG_SCREENSHOTS", tmp_path / "screenshots"))
    console = Console(browser, first.url, shots)
    try:
        page = console.page("overview")
        rows = page.locator("#cluster tr.node")
        expect(rows).to_have_count(2)
        this, other = rows.nth(0), rows.nth(1)
        expect(this).to_contain_text("node-a (this node)")
        expect(this).to_contain_text("alive")
        expect(other.locator("td").nth(0)).to_have_text("node-b")
        expect(other.locator("td").nth(3)).to_have_text("1")  # the MQTT client on node-b
        console.shot(page, "cluster")
        device.disconnect()
        second.kill()
        # down once three announce intervals (6 s) pass without an announcement
        expect(other.locator("td").nth(2)).to_have_text("down", timeout=30_000)
        expect(this).to_contain_text("alive")
    finally:
        console.close()
        second.kill()
        first.kill()
