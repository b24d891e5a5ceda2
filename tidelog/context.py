"""What a server is configured with, and what its listeners share.

:class:`ServerConfig` is the typed configuration of ``tidelog serve``.
:class:`ServerContext` is built once per server by :func:`tidelog.server.run_server`
and handed to every listener (MQTT over TCP and TLS, the WebSocket listener and
its routes, the REST app): the broker, the security every client passes, the
traffic counters, the MQTT server (connections by client id, ``$SYS`` values)
and the configuration. Nothing is looked up in tables keyed by broker; a
listener has exactly what it was given.

Security is required: there is no open default a listener could fall back to.
Tests and embedded servers that want an open server say so with
:meth:`tidelog.security.Security.open`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from tidelog.api.settings import HTTPSettings, http_settings
from tidelog.config import Settings
from tidelog.mesh.config import LinkConfig
from tidelog.protocols.mqtt.server import MQTTServer
from tidelog.protocols.mqtt.settings import MQTTSettings
from tidelog.security import Security, SecurityConfig
from tidelog.storage import DEFAULT_URL
from tidelog.traffic import TrafficCounters
from tidelog.webhooks import WebhookService

if TYPE_CHECKING:
    from tidelog.engine import Broker
    from tidelog.mesh.node import Mesh


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
    http_options: HTTPSettings = attrs.field(factory=HTTPSettings, converter=http_settings)
    """The REST listener's ``[http]`` settings (a mapping of their names is converted)."""
    sys_interval: float | None = None
    """Seconds between ``$SYS/broker/...`` updates over MQTT; None: none."""
    shutdown_timeout: float = 10.0
    """Seconds :func:`serve_until_signalled` waits for a clean shutdown before giving up."""
    node_id: str | None = None
    """``node.id`` (``--node-id``): this node's name in a mesh (None: the stable id stored
    in the data directory) and among the nodes serving one shared log (None there:
    ``<host name>-<MQTT port>``)."""
    links: tuple[LinkConfig, ...] = ()
    """``[[link]]``: the mesh links this node dials (docs/mesh.md)."""
    webhooks: list[dict[str, Any]] = attrs.field(factory=list)
    """``[[webhook]]`` tables of the configuration file (docs/consumers.md)."""
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
            http_options=http_settings({k: v for k, v in sections["http"].items() if k != "port"}),
            security=SecurityConfig(**sections["security"]),
            sys_interval=sys["interval"] if sys["enabled"] else None,
            shutdown_timeout=sections["server"]["shutdown_timeout"],
            node_id=sections["node"]["id"],
            links=tuple(settings.tables.get("link", ())),
            sections=sections,
            webhooks=list(settings.tables.get("webhook", ())),
        )

    security: SecurityConfig = attrs.field(factory=SecurityConfig)
    """Authentication, ACLs, client certificates, limits (docs/security.md)."""


@attrs.frozen
class ServerContext:
    """One server's shared parts, handed to each listener (see the module docs)."""

    config: ServerConfig
    broker: Broker
    security: Security
    """Authentication, ACLs and limits; required (no open fallback)."""
    mqtt: MQTTServer
    """The MQTT connections by client id, the authentication hook, ``$SYS`` values."""
    traffic: TrafficCounters
    """Per-protocol connection, packet and byte counters (``/metrics``, ``$SYS``)."""
    mesh: Mesh | None = None
    """The node's mesh links (None for servers built without one, e.g. some tests)."""
    ports: dict[str, int] = attrs.field(factory=dict)
    """The ports the listeners bound, by listener name (filled as they start)."""
    webhooks: WebhookService | None = None
    """The server's webhooks (:mod:`tidelog.webhooks`); run by :func:`tidelog.server.run_server`."""

    @classmethod
    def create(
        cls, config: ServerConfig, broker: Broker, security: Security, mesh: Mesh | None = None
    ) -> ServerContext:
        """A context with fresh traffic counters and an MQTT server with the
        configuration's MQTT settings; ``mesh`` accepts links on the MQTT listeners."""
        traffic = TrafficCounters()
        mqtt = MQTTServer(broker, security, MQTTSettings(**config.mqtt_options), traffic)
        if mesh is not None:
            mqtt.link_acceptor = mesh.accept
        webhooks = WebhookService(broker, security, list(config.webhooks))
        return cls(config, broker, security, mqtt, traffic, mesh, webhooks=webhooks)
