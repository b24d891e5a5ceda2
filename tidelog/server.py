"""Build a broker from a configuration and run every listener in one nursery.

Each listener is a function ``serve(broker, config, host, port, *, task_status)``
that binds, reports the bound port through ``task_status.started(port)`` (so
port 0 picks a free port, which tests use) and serves until cancelled. The
process logs one line per listener once it is ready, and on SIGTERM/SIGINT
stops the listeners, lets the broker commit what it has accepted and closes
the log before returning.

Startup errors (a port in use, a locked or unreadable data directory) raise
:class:`StartupError` or a :class:`~tidelog.errors.StorageError` with a
one-line message; ``tidelog serve`` prints it and exits 1.
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
from tidelog.config import Settings
from tidelog.engine import Broker
from tidelog.errors import TidelogError
from tidelog.security import Security, SecurityConfig, install, load_security
from tidelog.security.config import is_loopback
from tidelog.storage import DEFAULT_URL

log = logging.getLogger("tidelog.server")

Listener = Callable[..., Awaitable[None]]


class StartupError(TidelogError):
    """The server cannot start (e.g. a port is in use); the message says why, in one line."""


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
    http_options: dict[str, Any] = attrs.field(factory=dict)
    """``max_body_bytes``, ``access_log`` of the REST listener."""
    sys_interval: float | None = None
    """Seconds between ``$SYS/broker/...`` updates over MQTT; None: none."""
    shutdown_timeout: float = 10.0
    """Seconds :func:`serve_until_signalled` waits for a clean shutdown before giving up."""
    sections: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    """Every configuration section as loaded (see :mod:`tidelog.options`), for
    components that read their own section."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerConfig:
        """The server configuration from ``tidelog serve``'s loaded settings."""
        sections = settings.sections()
        # storage options set explicitly only: the defaults must not override the URL's query
        storage = {
            name: value
            for name, value in sections["storage"].items()
            if settings.values[f"storage.{name}"].source != "default"
        }
        url = sections["storage"]["url"]
        storage.pop("url", None)
        mqtt = dict(sections["mqtt"])
        mqtt_port, mqtt_tls_port = mqtt.pop("port"), mqtt.pop("tls_port")
        sys = sections["sys"]
        return cls(
            storage=url,
            bind=sections["server"]["bind"],
            mqtt_port=mqtt_port,
            mqtt_tls_port=mqtt_tls_port,
            tls_cert=sections["tls"]["cert"],
            tls_key=sections["tls"]["key"],
            ws_port=sections["websocket"]["port"],
            http_port=sections["http"]["port"],
            storage_options=storage,
            broker_options=dict(sections["broker"]),
            mqtt_options=mqtt,
            http_options={k: v for k, v in sections["http"].items() if k != "port"},
            security=SecurityConfig(**sections["security"]),
            sys_interval=sys["interval"] if sys["enabled"] else None,
            shutdown_timeout=sections["server"]["shutdown_timeout"],
            sections=sections,
        )

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
    options = {**config.storage_options, **config.broker_options}
    async with tidelog.open(config.storage, **options) as broker:
        install(broker, security)
        state = await broker.log_state()
        log.info(
            "tidelog %s: storage %s (%s) ready, offsets %d..%d",
            tidelog.__version__,
            config.storage,
            broker.statistics().log.backend,
            state.first_offset,
            state.next_offset,
        )
        if not is_loopback(config.bind):
            log.warning("listening on %s: reachable from other machines", config.bind)
        with listeners_scope:
            async with background_nursery() as nursery:
                ports: dict[str, int] = {}
                for spec in enabled_listeners(config):
                    port = getattr(config, spec.port_field)
                    serve = _load(spec.target)
                    try:
                        bound = await nursery.start(serve, broker, config, config.bind, port)
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
                if config.sys_interval is not None and any(n.startswith("MQTT") for n in ports):
                    from tidelog.sys_topics import publish_sys_topics

                    nursery.start_soon(publish_sys_topics, broker, config.sys_interval)
                task_status.started(RunningServer(broker, ports))
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
