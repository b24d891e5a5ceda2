from __future__ import annotations

from pathlib import Path

import pytest

from tests.storage.backends import BACKEND_NAMES, BackendUnderTest, ManualClock, make_backend


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> BackendUnderTest:
    return make_backend(request.param, tmp_path)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
