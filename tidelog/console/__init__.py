"""The web console, served by the HTTP listener (docs/console.md).

``/`` answers a browser (``Accept: text/html``) with the console's page and
anything else with the API's index document; ``/ui/`` (the old example page's
address) redirects to ``/``. The page's scripts and styles are files of this
package under ``/console/`` (``static/``; the charting library vendored in
``static/vendor/``), so the console works without internet and needs no build
step. It uses only the public API (REST, and SSE for live data), with the same
authentication and ACLs as any client. ``/console/example.html`` is the small
example of the ``/v1/ws`` protocol (docs/websocket.md).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

import tidelog
from tidelog.api.shapes import dumps

STATIC_DIR = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)


def _wants_html(request: Request) -> bool:
    """True when the client prefers HTML (a browser navigating), not JSON."""
    accept = request.headers.get("accept", "")
    return "text/html" in accept


@router.get("/")
async def index(request: Request) -> Response:
    if _wants_html(request):
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})
    body = {
        "name": "tidelog",
        "version": tidelog.__version__,
        "console": "/",
        "docs": "/docs",
        "openapi": "/openapi.json",
    }
    return Response(dumps(body), media_type="application/json", headers={"vary": "accept"})


@router.get("/ui")
@router.get("/ui/")
async def ui_redirect() -> RedirectResponse:
    return RedirectResponse("/", status_code=308)


@router.get("/console/config.json")
async def console_config(request: Request) -> Response:
    """What pages need before they log in: where the WebSocket listener is (the
    example page), and whether anonymous clients are allowed (else the console
    asks for credentials first, instead of provoking a 401)."""
    context = request.app.state.context
    body = {
        "ws_port": context.ports.get("WebSocket", request.app.state.ws_port),
        "ws_path": "/v1/ws",
        "anonymous": context.security.anonymous,
    }
    return Response(dumps(body), media_type="application/json")


def install(app: FastAPI) -> None:
    """Add the console's routes and files to the REST app."""
    app.include_router(router)
    app.mount("/console", StaticFiles(directory=STATIC_DIR, html=False), name="console")
