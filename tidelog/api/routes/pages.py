"""Pages for people, outside the OpenAPI document: the index, Swagger UI (``/docs``,
its assets from the package) and the example page's configuration (``/ui/``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html, swagger_ui_default_parameters
from fastapi.responses import RedirectResponse, Response

import tidelog
from tidelog.api.routes.responses import JSONResponse

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> JSONResponse:
    return JSONResponse(
        {
            "name": "tidelog",
            "version": tidelog.__version__,
            "docs": "/docs",
            "openapi": "/openapi.json",
            "ui": "/ui/",
        }
    )


@router.get("/docs", include_in_schema=False)
async def swagger_ui() -> Response:
    """Swagger UI for /openapi.json, its assets from the package (no CDN: it works
    offline; tidelog/api/static/swagger-ui/README.md says where they come from)."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="tidelog API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/docs/assets/favicon-32x32.png",
        # no badge from the public validator service either
        swagger_ui_parameters={**swagger_ui_default_parameters, "validatorUrl": None},
    )


@router.get("/ui", include_in_schema=False)
async def ui_redirect() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/config.json", include_in_schema=False)
async def ui_config(request: Request) -> JSONResponse:
    """Where the example page finds the WebSocket listener."""
    return JSONResponse({"ws_port": request.app.state.ws_port, "ws_path": "/v1/ws"})
