"""Fixtures every test directory may use."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka_broker import KafkaCluster


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaCluster]:
    """One single-broker KRaft Kafka for the whole session, started on first use.

    A test that needs Kafka fails (never skips) when Kafka cannot be fetched or
    started: CI must run those tests."""
    directory = Path(tempfile.mkdtemp(prefix="tidelog-kafka-"))
    cluster = KafkaCluster(directory, brokers=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
