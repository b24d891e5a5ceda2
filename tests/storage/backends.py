"""The backends the shared conformance suite runs against, and how to open each one."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs

from tidelog.storage import EventLog, open_log


@attrs.define
class ManualClock:
    """A clock tests move by hand (ms since the epoch)."""

    now: int = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@attrs.define
class BackendUnderTest:
    """One backend, with a fixed location so tests can close and reopen it."""

    name: str
    url: str
    durable: bool
    segmented: bool

    @contextlib.asynccontextmanager
    async def open(self, **options: Any) -> AsyncIterator[EventLog]:
        async with open_log(self.url, **options) as log:
            yield log


def make_backend(name: str, tmp_path: Path, kafka: str | None = None) -> BackendUnderTest:
    """``kafka``: the bootstrap servers of a running Kafka (for the ``kafka`` backend)."""
    if name == "memory":
        return BackendUnderTest(name, "memory://", durable=False, segmented=False)
    if name == "lmdb":
        return BackendUnderTest(name, f"lmdb://{tmp_path}/data", durable=True, segmented=True)
    if name == "sqlite":
        return BackendUnderTest(name, f"sqlite://{tmp_path}/log.db", durable=True, segmented=False)
    if name == "kafka" and kafka is not None:
        log_name = f"log-{uuid.uuid4().hex[:12]}"  # Kafka outlives tmp_path: a fresh topic
        return BackendUnderTest(name, f"kafka://{kafka}/{log_name}", durable=True, segmented=False)
    raise ValueError(name)


BACKEND_NAMES = ["memory", "sqlite", "lmdb"]
"""Every backend here passes tests/storage/test_conformance.py unchanged."""

STORAGE_BACKEND_NAMES = [*BACKEND_NAMES, "kafka"]
"""The conformance suite also runs on ``kafka://`` (against the session's real Kafka,
tests/conftest.py); the engine's backend-parametrized tests stay on the embedded three."""
