"""Build a broker from a configuration and run every listener in one nursery.

Each listener is a function ``serve(context, host, port, *, task_status)``
(:data:`Listener`), given the server's one :class:`~tidelog.context.ServerContext`
(broker, security, MQTT server, traffic counters, configuration). It binds,
reports the bound port through ``task_status.started(port)`` (so port 0 picks
a free port, which tests use) and serves until cancelled. The process logs
one line per listener once it is ready, and on SIGTERM/SIGINT stops the
listeners, lets the broker commit what it has accepted and closes the log
before returning.

Startup errors (a port in use, a locked or unreadable data directory) raise
:class:`StartupError` or a :class:`~tidelog.errors.StorageError` with a
one-line message; ``tidelog serve`` prints it and exits 1.

The HTTP and WebSocket listeners are imported only when enabled: FastAPI,
pydantic and the WebSocket stack add about 20 MiB of anonymous memory to the
process (RssAnon 22 -> 43 MiB), which an MQTT-only broker does not need. When
enabled they are imported before the log opens and any listener accepts: the
import takes a second or more of CPU on the event loop, which would otherwise
stall the MQTT connections and links already running.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

import tidelog
from tidelog.concurrency import background_nursery
from tidelog.context import ServerConfig, ServerContext
from tidelog.engine import Broker
from tidelog.errors import TidelogError
from tidelog.mesh.node import Mesh
from tidelog.node import NodeStart, announce_node, node_id
from tidelog.protocols.mqtt.server import serve_tcp, serve_tls
from tidelog.security import Security, load_security
from tidelog.security.config import is_loopback
from tidelog.storage import checksums
from tidelog.sys_topics import publish_sys_topics

__all__ = ["RunningServer", "ServerConfig", "ServerContext", "StartupError", "run_server"]

log = logging.getLogger("tidelog.server")

Listener = Callable[..., Awaitable[None]]
"""``serve(context, host, port, *, task_status)``: binds, reports the bound port
through ``task_status.started(port)``, serves until cancelled."""


class StartupError(TidelogError):
    """The server cannot start (e.g. a port is in use); the message says why, in one line."""


@attrs.frozen
class ListenerSpec:
    name: str
    """Shown in the ready line."""
    port_field: str
    """The ServerConfig field holding its port."""
    serve: Listener
    requires: tuple[str, ...] = ()
    """Further ServerConfig fields that must be set for the listener to run."""
    module: str | None = None
    """The module ``serve`` imports when it starts (imported up front, see above)."""


async def serve_websocket(context: ServerContext, host: str, port: int, **kwargs: Any) -> None:
    """:func:`tidelog.websocket_listener.serve_websocket`, imported when it starts."""
    from tidelog.websocket_listener import serve_websocket as serve

    await serve(context, host, port, **kwargs)


async def serve_http(context: ServerContext, host: str, port: int, **kwargs: Any) -> None:
    """:func:`tidelog.api.rest.serve_http`, imported when it starts."""
    from tidelog.api.rest import serve_http as serve

    await serve(context, host, port, **kwargs)


LISTENERS: list[ListenerSpec] = [
    ListenerSpec("MQTT", "mqtt_port", serve_tcp),
    ListenerSpec("MQTT-TLS", "mqtt_tls_port", serve_tls, requires=("tls_cert", "tls_key")),
    ListenerSpec("WebSocket", "ws_port", serve_websocket, module="tidelog.websocket_listener"),
    ListenerSpec("HTTP", "http_port", serve_http, module="tidelog.api.rest"),
]
"""Every listener the server can run, in start order."""


@attrs.frozen
class RunningServer:
    """Handed to ``task_status.started``: the context and the ports actually bound."""

    context: ServerContext
    ports: dict[str, int]

    @property
    def broker(self) -> Broker:
        return self.context.broker


def enabled_listeners(config: ServerConfig) -> list[ListenerSpec]:
    """The listeners ``config`` turns on, in start order."""
    return [
        spec
        for spec in LISTENERS
        if getattr(config, spec.port_field) is not None
        and all(getattr(config, field) is not None for field in spec.requires)
    ]


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError (a bind failure) in ``exc`` or in the exception groups around it."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _os_error(inner)
            if found is not None:
                return found
    return None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def run_server(
    config: ServerConfig, *, task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED
) -> None:
    """Open the broker, start every enabled listener, serve until cancelled.

    Shutdown is ordered: cancelling this task stops the listeners and their
    connections first, while the broker still runs (so connections can save
    their sessions and get their last publishes acknowledged); then the broker
    commits and flushes everything already accepted and the log closes.
    """
    if not enabled_listeners(config):
        raise StartupError(
            "every listener is off (mqtt.port, mqtt.tls_port with tls.cert and tls.key, "
            "websocket.port, http.port): there would be nothing to serve; turn one on "
            "(the data commands work without a server: tidelog replay --storage ...)"
        )
    security = load_security(config)  # refuses an unsafe configuration before binding
    listeners_scope = trio.CancelScope()

    async def stop_listeners_when_cancelled() -> None:
        try:
            await trio.sleep_forever()
        finally:
            listeners_scope.cancel()

    async with trio.open_nursery() as outer:
        outer.start_soon(stop_listeners_when_cancelled)
        with trio.CancelScope(shield=True):
            await _run_broker_and_listeners(config, listeners_scope, task_status, security)
        outer.cancel_scope.cancel()


async def _run_broker_and_listeners(
    config: ServerConfig,
    listeners_scope: trio.CancelScope,
    task_status: trio.TaskStatus[RunningServer],
    security: Security,
) -> None:
    for spec in enabled_listeners(config):
        if spec.module is not None:
            importlib.import_module(spec.module)
    options = {**config.storage_options, **config.broker_options}
    async with tidelog.open(config.storage, **options) as broker:
        mesh = await Mesh.open(broker, node_id(config, broker.shared), config.links)
        broker.cluster.node_id = mesh.node_id  # one id: the mesh's and the cluster's
        start = NodeStart(broker, mesh.node_id)
        await start.try_run()  # before the listeners: see NodeStart
        context = ServerContext.create(config, broker, security, mesh)
        state = await broker.log_state()
        log.info(
            "tidelog %s: storage %s (%s) ready, offsets %d..%d; record checksums: %s",
            tidelog.__version__,
            config.storage,
            broker.statistics().log.backend,
            state.first_offset,
            state.next_offset,
            checksums.IMPLEMENTATION,
        )
        if not is_loopback(config.bind):
            log.warning("listening on %s: reachable from other machines", config.bind)
        with listeners_scope:
            async with background_nursery() as nursery:
                ports = context.ports
                for spec in enabled_listeners(config):
                    port = getattr(config, spec.port_field)
                    try:
                        bound = await nursery.start(spec.serve, context, config.bind, port)
                    except (OSError, BaseExceptionGroup) as exc:
                        # the HTTP and WebSocket listeners bind inside nurseries of their own
                        error = _os_error(exc)
                        if error is None:
                            raise
                        raise StartupError(
                            f"{spec.name} cannot listen on {_address(config.bind, port)}: "
                            f"{error.strerror or error}"
                        ) from None
                    ports[spec.name] = bound
                    log.info("%s listening on %s:%d", spec.name, config.bind, bound)
                nursery.start_soon(mesh.run)
                if context.webhooks is not None:
                    await nursery.start(context.webhooks.run)
                if config.sys_interval is not None and any(n.startswith("MQTT") for n in ports):
                    nursery.start_soon(publish_sys_topics, context, config.sys_interval)
                nursery.start_soon(announce_node, context, mesh.node_id, ports, start)
                task_status.started(RunningServer(context, ports))
        # the listeners only end when cancelled; leaving the broker block commits and
        # flushes everything already accepted before the log closes


async def serve_until_signalled(config: ServerConfig) -> None:
    """Run the server until SIGTERM or SIGINT, then shut down cleanly.

    Shutdown is bounded: if it has not finished ``config.shutdown_timeout``
    seconds after the signal (or a second signal comes), the process exits
    with status 1 at once. That is safe for the data: the log survives a crash
    at any point, and nothing was acknowledged that is not durable.
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with background_nursery() as nursery:
            server_scope = trio.CancelScope()

            async def run() -> None:
                with server_scope:
                    await run_server(config)
                nursery.cancel_scope.cancel()  # the server is down: stop waiting for signals

            nursery.start_soon(run)
            async for signum in signals:
                log.info("%s received: shutting down", signal.Signals(signum).name)
                server_scope.cancel()
                break
            with trio.move_on_after(config.shutdown_timeout):
                async for signum in signals:
                    log.error("%s received again: exiting now", signal.Signals(signum).name)
                    break
            log.error("shutdown did not finish in %ss: exiting now", config.shutdown_timeout)
            _exit_now(1)
    log.info("stopped")


def _exit_now(status: int) -> None:
    """Leave at once (the log is crash-safe); flush the log handlers first."""
    logging.shutdown()
    os._exit(status)
