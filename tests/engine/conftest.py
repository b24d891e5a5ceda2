from __future__ import annotations

from pathlib import Path

import pytest

from tests.storage.backends import BACKEND_NAMES, BackendUnderTest, ManualClock, make_backend


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> BackendUnderTest:
    """Every storage backend: engine behaviour must not depend on which one runs."""
    return make_backend(request.param, tmp_path)


@pytest.fixture
def durable_backend(backend: BackendUnderTest) -> BackendUnderTest:
    if not backend.durable:
        pytest.skip(f"{backend.name} is not durable")
    return backend


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
