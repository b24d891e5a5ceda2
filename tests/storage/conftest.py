from __future__ import annotations

from pathlib import Path

import pytest

from tests.kafka_broker import KafkaCluster
from tests.storage.backends import (
    STORAGE_BACKEND_NAMES,
    BackendUnderTest,
    ManualClock,
    make_backend,
)


@pytest.fixture(params=STORAGE_BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> BackendUnderTest:
    if request.param == "kafka":
        kafka: KafkaCluster = request.getfixturevalue("kafka")
        return make_backend("kafka", tmp_path, kafka.bootstrap)
    return make_backend(request.param, tmp_path)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
