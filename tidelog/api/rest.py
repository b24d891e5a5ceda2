"""The REST API: a FastAPI app over one :class:`~tidelog.engine.Broker`, and its listener.

:func:`create_app` builds the app over the server's
:class:`~tidelog.context.ServerContext` (every route reaches the broker, the
security and the counters through ``app.state``) from the route modules of
:mod:`tidelog.api.routes` (one per resource); :func:`serve_http` serves it
with Hypercorn's trio worker in the broker's own trio process, as one of the
listeners of :mod:`tidelog.server`. The endpoints, shapes and errors are documented in
``docs/rest.md`` and in the app's own ``/openapi.json``.

Every request is bounded: bodies by :class:`~tidelog.api.limits.BodyLimitMiddleware`
(413), reads by ``limit`` and ``max_bytes`` caps, long-polls by a ``wait_ms`` cap.
A publish answers only once its event is durable (the engine's group commit).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hypercorn.config
import hypercorn.trio
import trio
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

import tidelog
from tidelog.api import metrics, problems
from tidelog.api.limits import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware, Utf8PathMiddleware
from tidelog.api.routes import RESOURCES, links
from tidelog.api.shapes import BatchIn
from tidelog.security.http import AuthMiddleware
from tidelog.security.tls import server_context

if TYPE_CHECKING:
    from tidelog.context import ServerContext

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SWAGGER_UI_DIR = STATIC_DIR / "swagger-ui"
GRACEFUL_SHUTDOWN_SECONDS = 2.0
READ_TIMEOUT_SECONDS = 30.0
"""A connection that sends nothing for this long while a request is in progress is
closed (with the body deadline of :mod:`tidelog.api.limits`: slow senders)."""
KEEP_ALIVE_SECONDS = 75.0
"""An idle connection, or one whose request headers have not arrived, is closed after
this long (Hypercorn counts header time as idle)."""


# -- the app and its listener --------------------------------------------------------


def create_app(
    context: ServerContext,
    *,
    ws_port: int | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    metrics_cursor_labels: bool = False,
) -> FastAPI:
    """The REST app over the server's context (its broker, security and traffic
    counters). ``ws_port`` tells the example page where /v1/ws is."""
    broker = context.broker
    app = FastAPI(
        docs_url=None,  # served below from the package's own copy of Swagger UI
        redoc_url=None,
        title="tidelog",
        version=tidelog.__version__,
        description="Publish, replay, stream and consume with durable cursors. "
        "Errors are RFC 9457 problem details. See docs/rest.md.",
    )
    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    app.state.context = context
    app.state.broker = broker
    app.state.ws_port = ws_port
    app.state.metrics_cursor_labels = metrics_cursor_labels
    app.state.closing = trio.Event()
    app.state.registry, app.state.collector = metrics.make_registry(broker, context.traffic)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(Utf8PathMiddleware)
    app.add_middleware(AuthMiddleware, security=context.security)  # runs first (docs/security.md)
    problems.install(app)
    for router in RESOURCES:
        app.include_router(router)
    links.register_metrics(app.state.registry, context.mesh)
    app.mount("/docs/assets", StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui")
    app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the schemas of bodies a route parses itself."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        batch = BatchIn.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(batch.pop("$defs", {}))
        components["BatchIn"] = batch
        app.openapi_schema = schema
    return app.openapi_schema


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_http(
    context: ServerContext,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the REST API on ``host:port`` until cancelled; reports the bound port.

    Hypercorn runs shielded so that cancelling this listener shuts it down
    gracefully: it stops accepting, streams and long-polls end (the app's
    ``closing`` event), and requests in flight get
    :data:`GRACEFUL_SHUTDOWN_SECONDS` to finish.
    """
    config = context.config
    http_options = config.http_options
    app = create_app(
        context,
        ws_port=config.ws_port,
        max_body_bytes=http_options.max_body_bytes,
        metrics_cursor_labels=http_options.metrics_cursor_labels,
    )
    hc = hypercorn.config.Config()
    hc.bind = [_bind(host, port)]
    hc.graceful_timeout = GRACEFUL_SHUTDOWN_SECONDS
    hc.accesslog = logging.getLogger("tidelog.access") if http_options.access_log else None
    hc.access_log_format = (
        '%(h)s "%(r)s" %(s)s %(b)s %(L)ss'  # remote, request, status, bytes, time
    )
    hc.errorlog = logging.getLogger("tidelog.api.http")
    hc.keep_alive_timeout = KEEP_ALIVE_SECONDS
    hc.read_timeout = READ_TIMEOUT_SECONDS  # type: ignore[assignment]
    if config.security.http_tls:  # HTTPS (tidelog/security/tls.py)
        assert config.tls_cert is not None and config.tls_key is not None  # check_startup
        ssl_context = server_context(
            config.tls_cert, config.tls_key, config.security, record_peer=True
        )
        hc.certfile, hc.keyfile = config.tls_cert, config.tls_key  # marks the bind secure
        hc.create_ssl_context = lambda: ssl_context  # type: ignore[method-assign]
    shutdown = trio.Event()
    shielded = trio.CancelScope(shield=True)

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        with shielded:
            await hypercorn.trio.serve(
                app,  # type: ignore[arg-type]
                hc,
                shutdown_trigger=shutdown.wait,
                task_status=task_status,
            )

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(run)
        bound = int(binds[0].rsplit(":", 1)[1])
        task_status.started(bound)
        try:
            await trio.sleep_forever()
        finally:
            app.state.closing.set()
            shutdown.set()
            # the shield ignores our cancellation; this bounds the graceful part
            shielded.deadline = trio.current_time() + GRACEFUL_SHUTDOWN_SECONDS + 3
