"""Fixtures of the console's tests: servers with security settings (shared with the
security tests) and, for the browser tests, Chromium through Playwright."""

from __future__ import annotations

from tests.security.conftest import make_server

__all__ = ["make_server"]
