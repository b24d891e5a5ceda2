"""``/docs`` needs no internet: Swagger UI's page names only assets the server itself
serves from the package (the browser test renders it with every other host blocked)."""

from __future__ import annotations

import re

import httpx


async def test_docs_page_loads_only_local_assets(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "cdn" not in html.lower()
    assert '"validatorUrl": null' in html  # Swagger UI's default is a public service
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    urls += re.findall(r"""url:\s*["']([^"']+)["']""", html)
    assert urls
    assert not [u for u in urls if re.match(r"(https?:)?//", u)], urls
    kinds = {
        "/docs/assets/swagger-ui-bundle.js": "javascript",
        "/docs/assets/swagger-ui.css": "text/css",
        "/docs/assets/favicon-32x32.png": "image/png",
        "/openapi.json": "application/json",
    }
    assert set(kinds) <= set(urls)
    for url, kind in kinds.items():
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert kind in asset.headers["content-type"], url
    bundle = (await client.get("/docs/assets/swagger-ui-bundle.js")).content
    assert len(bundle) > 1_000_000  # the real bundle, not a stub
    assert (await client.get("/redoc")).status_code == 404  # ReDoc would need a CDN
