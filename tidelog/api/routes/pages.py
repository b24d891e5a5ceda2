"""Swagger UI (``/docs``, its assets from the package), outside the OpenAPI document.
The console and the index document at ``/`` are :mod:`.console`'s."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html, swagger_ui_default_parameters
from fastapi.responses import Response

router = APIRouter()


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
