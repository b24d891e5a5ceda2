"""Build a broker from a configuration and run every listener in one nursery.

Each listener is a function ``serve(broker, config, host, port, *, task_status)``
that binds, reports the bound port through ``task_status.started(port)`` (so
port 0 picks a free port, which tests use) and serves until cancelled. The
process logs one line per listener once it is ready, and on SIGTERM/SIGINT
stops the listeners, lets the broker commit what it has accepted and closes
the log before returning.
"""

from __future__ import annotations

import importlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

import tidelog
from tidelog.concurrency import background_nursery
from tidelog.engine import Broker
from tidelog.security import Security, SecurityConfig, install, load_security
from tidelog.storage import DEFAULT_URL

log = logging.getLogger("tidelog.server")

Listener = Callable[..., Awaitable[None]]


@attrs.define
class ServerConfig:
    """What ``tidelog serve`` runs. A port of None disables that listener."""

    storage: str = DEFAULT_URL
    bind: str = "127.0.0.1"
    mqtt_port: int | None = 1883
    mqtt_tls_port: int | None = 8883
    """MQTT over TLS; runs only when ``tls_cert`` and ``tls_key`` are set."""
    tls_cert: str | None = None
    """PEM certificate chain file for the TLS listener."""
    tls_key: str | None = None
    """PEM private key file for the TLS listener."""
    ws_port: int | None = 8083
    http_port: int | None = 8080
    storage_options: dict[str, Any] = attrs.field(factory=dict)
    broker_options: dict[str, Any] = attrs.field(factory=dict)
    mqtt_options: dict[str, Any] = attrs.field(factory=dict)
    """:class:`tidelog.protocols.mqtt.settings.MQTTSettings` fields."""
    security: SecurityConfig = attrs.field(factory=SecurityConfig)
    """Authentication, ACLs, client certificates, limits (docs/security.md)."""


@attrs.frozen
class ListenerSpec:
    name: str
    """Shown in the ready line."""
    port_field: str
    """The ServerConfig field holding its port."""
    target: str
    """``module:function`` of the serve function (imported only when enabled)."""
    requires: tuple[str, ...] = ()
    """Further ServerConfig fields that must be set for the listener to run."""


LISTENERS: list[ListenerSpec] = [
    ListenerSpec("MQTT", "mqtt_port", "tidelog.protocols.mqtt.server:serve_tcp"),
    ListenerSpec(
        "MQTT-TLS",
        "mqtt_tls_port",
        "tidelog.protocols.mqtt.server:serve_tls",
        requires=("tls_cert", "tls_key"),
    ),
    ListenerSpec("WebSocket", "ws_port", "tidelog.websocket:serve_websocket"),
    ListenerSpec("HTTP", "http_port", "tidelog.api.rest:serve_http"),
]
"""Every listener the server can run, in start order."""


@attrs.frozen
class RunningServer:
    """Handed to ``task_status.started``: the broker and the ports actually bound."""

    broker: Broker
    ports: dict[str, int]


def _load(target: str) -> Listener:
    module_name, _, function = target.partition(":")
    listener: Listener = getattr(importlib.import_module(module_name), function)
    return listener


async def run_server(
    config: ServerConfig, *, task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED
) -> None:
    """Open the broker, start every enabled listener, serve until cancelled.

    Shutdown is ordered: cancelling this task stops the listeners and their
    connections first, while the broker still runs (so connections can save
    their sessions and get their last publishes acknowledged); then the broker
    commits and flushes everything already accepted and the log closes.
    """
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
    options = {**config.storage_options, **config.broker_options}
    async with tidelog.open(config.storage, **options) as broker:
        install(broker, security)
        log.info("storage %s ready at offset %d", config.storage, broker.end_offset)
        with listeners_scope:
            async with background_nursery() as nursery:
                ports: dict[str, int] = {}
                for spec in LISTENERS:
                    port = getattr(config, spec.port_field)
                    if port is None or any(getattr(config, f) is None for f in spec.requires):
                        continue
                    serve = _load(spec.target)
                    bound = await nursery.start(serve, broker, config, config.bind, port)
                    ports[spec.name] = bound
                    log.info("%s listening on %s:%d", spec.name, config.bind, bound)
                task_status.started(RunningServer(broker, ports))
        # the listeners only end when cancelled; leaving the broker block commits and
        # flushes everything already accepted before the log closes


async def serve_until_signalled(config: ServerConfig) -> None:
    """Run the server until SIGTERM or SIGINT, then shut down cleanly."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with background_nursery() as nursery:
            nursery.start_soon(run_server, config)
            async for signum in signals:
                log.info("%s received: shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
    log.info("stopped")
