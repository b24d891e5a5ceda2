"""The web console's files (docs/console.md): a page, its scripts and styles, and the
vendored charting library, served by the HTTP listener under ``/console/`` (the
routes are :mod:`tidelog.api.routes.console`). No build step, no CDN: these files
ship in the package. Each section of the console is a module of ``static/pages/``
that registers itself (``static/lib.js``, ``registerSection``); the console uses
only the public API (REST, and SSE for live data). ``static/example.html`` is the
small example of the ``/v1/ws`` protocol (docs/websocket.md).
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
"""The console's files."""
