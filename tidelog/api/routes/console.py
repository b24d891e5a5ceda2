"""The web console's addresses (docs/console.md): ``/`` answers a browser
(``Accept: text/html``) with the console's page and anything else with the API's
index document; ``/ui/`` (the old example page's address) redirects to ``/``;
``/console/config.json`` is what pages need before they log in. The console's
files are :mod:`tidelog.console`'s, mounted at ``/console/`` by
:func:`tidelog.api.rest.create_app`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

import tidelog
from tidelog.api.routes.responses import JSONResponse
from tidelog.console import STATIC_DIR

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index(request: Request) -> Response:
    if "text/html" in request.headers.get("accept", ""):
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})
    body = {
        "name": "tidelog",
        "version": tidelog.__version__,
        "console": "/",
        "docs": "/docs",
        "openapi": "/openapi.json",
    }
    return JSONResponse(body, headers={"vary": "accept"})


@router.get("/ui")
@router.get("/ui/")
async def ui_redirect() -> RedirectResponse:
    return RedirectResponse("/", status_code=308)


@router.get("/console/config.json")
async def console_config(request: Request) -> JSONResponse:
    """What pages need before they log in: where the WebSocket listener is (the
    example page), and whether anonymous clients are allowed (else the console
    asks for credentials first, instead of provoking a 401)."""
    context = request.app.state.context
    return JSONResponse(
        {
            "ws_port": context.ports.get("WebSocket", request.app.state.ws_port),
            "ws_path": "/v1/ws",
            "anonymous": context.security.anonymous,
        }
    )
