"""A ``tidelog serve`` subprocess for the CLI tests (SQLite, the REST listener only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.serve_process import start_server
from tidelog.testing.server import ServerProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    serve = start_server(tmp_path, "--storage", f"sqlite://{tmp_path}/log.db", "--mqtt-port", "off",
                         "--ws-port", "off", "--http-port", "0", expect=("HTTP",))  # fmt: skip
    try:
        yield serve
    finally:
        assert serve.stop() == 0
