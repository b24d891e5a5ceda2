"""Three ``tidelog serve`` processes (nodes) over one Kafka log."""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.kafka_broker import KafkaCluster
from tests.protocols.mqtt.server_helpers import Client
from tests.serve_process import start_server
from tidelog.testing.server import ServerProcess

QUIET = ("--log-level", "warning")


def start_node(tmp_path: Path, url: str, name: str) -> ServerProcess:
    """One node: every listener on a free port, announced under ``name``."""
    return start_server(
        tmp_path,
        "--storage",
        url,
        "--node-id",
        name,
        "--mqtt-port",
        "0",
        "--http-port",
        "0",
        "--ws-port",
        "0",
        "--log-level",
        "info",
        expect=("MQTT", "HTTP", "WebSocket"),
    )


@pytest.fixture(scope="module")
def log_url(kafka: KafkaCluster) -> str:
    """One log per test module: its tests share three nodes and use topics of their own."""
    return kafka.url(f"cluster-{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, log_url: str) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    directory = tmp_path_factory.mktemp("nodes")
    try:
        for index in range(3):  # one at a time: on two cores parallel starts are no faster
            started.append(start_node(directory, log_url, f"node-{index + 1}"))
        yield started
    finally:
        for node in started:
            node.kill()


def collect(members: Sequence[Client], count: int, timeout: float = 30) -> list[list[bytes]]:
    """The payloads each client received, once ``count`` arrived in all (or at the
    timeout: the caller's assertions then say what is missing)."""
    got: list[list[bytes]] = [[] for _ in members]
    deadline = time.monotonic() + timeout
    while sum(map(len, got)) < count and time.monotonic() < deadline:
        for index, member in enumerate(members):
            try:
                got[index].append(member.messages.get(timeout=0.05).payload)
            except queue.Empty:
                continue
    return got
