"""Every option of ``tidelog serve``, by section (see :mod:`tidelog.config` for the rules).

A new section is a :func:`~tidelog.config.section` call and one
:func:`~tidelog.config.option` call per field; its values reach the server in
``ServerConfig.sections[<name>]`` and are listed by ``tidelog config show``
and ``docs/configuration.md`` (a test checks that the docs list every option).
"""

from __future__ import annotations

from tidelog.config import (
    AUTO,
    Settings,
    address,
    boolean,
    boolean_or_auto,
    choice,
    duration_ms,
    fsync_policy,
    integer,
    option,
    optional,
    port,
    seconds,
    section,
    size,
    storage_url,
    string,
    string_list,
    table_array,
)
from tidelog.engine.broker import BrokerOptions
from tidelog.mesh.config import LinkConfig, optional_node_id, parse_links
from tidelog.protocols.mqtt.settings import MQTTSettings
from tidelog.security import SecurityConfig
from tidelog.security.limits import MAX_NAME_BYTES
from tidelog.storage import DEFAULT_URL, LogOptions
from tidelog.webhooks import spec as webhook_spec

_log = LogOptions()
_broker = BrokerOptions()
_mqtt = MQTTSettings()

section("server", "the process: where listeners bind, how long shutdown may take")
option(
    "server",
    "bind",
    address,
    "127.0.0.1",
    "address every listener binds to; anything but loopback must be set explicitly",
    flag="--bind",
    env_aliases=["TIDELOG_BIND"],
)
option(
    "server",
    "shutdown_timeout",
    seconds,
    10.0,
    "seconds after SIGTERM/SIGINT before the process gives up waiting and exits non-zero",
)

section("storage", "the log: backend URL, durability, segments, retention")
option(
    "storage",
    "url",
    storage_url,
    DEFAULT_URL,
    "storage URL: lmdb://<dir>, sqlite://<file>, memory://, kafka://<host:port,...>/<log>",
    flag="--storage",
    env_aliases=["TIDELOG_STORAGE"],
)
option(
    "storage",
    "fsync",
    fsync_policy,
    str(_log.fsync),
    "when appends reach the disk: always (before the ack), interval:<ms>, never",
)
option("storage", "segment_bytes", size, _log.segment_bytes, "roll the active segment at this size")
option(
    "storage",
    "segment_ms",
    optional(duration_ms),
    _log.segment_ms,
    "roll the active segment once its first event is this old",
)
option(
    "storage",
    "retention_ms",
    optional(duration_ms),
    _log.retention_ms,
    "drop whole segments older than this",
)
option(
    "storage",
    "retention_bytes",
    optional(size),
    _log.retention_bytes,
    "drop the oldest segments while the log is larger than this",
)
option(
    "storage",
    "retention_check_ms",
    duration_ms,
    _log.retention_check_ms,
    "how often retention runs (when a bound is set)",
)
option(
    "storage",
    "max_record_bytes",
    size,
    _log.max_record_bytes,
    "largest event (record) the log accepts",
)

section("mqtt", "MQTT listeners (TCP, TLS) and limits (they also apply to MQTT over WebSocket)")
option("mqtt", "port", port, 1883, "MQTT over TCP; off disables it", flag="--mqtt-port")
option(
    "mqtt",
    "tls_port",
    port,
    8883,
    "MQTT over TLS; runs only when [tls] cert and key are set",
    flag="--mqtt-tls-port",
)
option(
    "mqtt",
    "max_packet_size",
    integer(16, 268_435_460),
    _mqtt.max_packet_size,
    "largest packet accepted (announced to v5 clients)",
)
option(
    "mqtt",
    "receive_maximum",
    integer(1, 65_535),
    _mqtt.receive_maximum,
    "inbound in-flight QoS 1/2 PUBLISHes per v5 client",
)
option(
    "mqtt",
    "v3_inflight_window",
    integer(1, 65_535),
    _mqtt.v3_inflight_window,
    "outbound in-flight QoS 1/2 messages for clients without a Receive Maximum",
)
option(
    "mqtt",
    "topic_alias_maximum",
    integer(0, 65_535),
    _mqtt.topic_alias_maximum,
    "topic aliases a v5 client may set",
)
option(
    "mqtt",
    "server_keep_alive",
    optional(integer(0, 65_535)),
    _mqtt.server_keep_alive,
    "if set, v5 clients are told to use this keep alive (seconds)",
)
option(
    "mqtt",
    "max_keep_alive",
    optional(integer(1, 65_535)),
    _mqtt.max_keep_alive,
    "if set, the longest keep alive (seconds) a client may have; v5 clients asking"
    " for more or for none are told this one",
)
option(
    "mqtt",
    "connect_timeout",
    seconds,
    _mqtt.connect_timeout,
    "seconds a new connection has to send CONNECT",
)
option(
    "mqtt",
    "pending_deliveries",
    integer(1),
    _mqtt.pending_deliveries,
    "deliveries a connection buffers before its feed falls back to the log",
)
option(
    "mqtt",
    "max_send_bytes",
    size,
    _mqtt.max_send_bytes,
    "largest buffer one socket write takes",
)
option(
    "mqtt",
    "session_save_interval",
    seconds,
    _mqtt.session_save_interval,
    "seconds between saves of a persistent session's position",
)
option(
    "mqtt",
    "close_timeout",
    seconds,
    _mqtt.close_timeout,
    "seconds spent on the final DISCONNECT and saving state when a connection ends",
)

section("tls", "certificates for the TLS listeners")
option("tls", "cert", optional(string), None, "PEM certificate chain file", flag="--tls-cert")
option("tls", "key", optional(string), None, "PEM private key file", flag="--tls-key")

_security = SecurityConfig()
section("security", "authentication, topic ACLs, client certificates, limits (docs/security.md)")
option(
    "security",
    "password_file",
    optional(string),
    None,
    "users with scrypt password hashes and tokens (tidelog passwd)",
)
option("security", "acl_file", optional(string), None, "topic ACL rules (docs/security.md)")


def _anonymous_effective(settings: Settings) -> str:
    """What ``allow_anonymous`` resolves to (``config show``)."""
    from tidelog.security.config import is_loopback

    value = settings["security.allow_anonymous"]
    if value == AUTO:
        bind = settings["server.bind"]
        where = "every listener on loopback" if is_loopback(bind) else f"bound to {bind}"
        return f"{'allowed' if is_loopback(bind) else 'refused'} ({where})"
    return "allowed" if value else "refused"


option(
    "security",
    "allow_anonymous",
    boolean_or_auto,
    AUTO,
    "clients without credentials: true, false, or auto (allowed only while every "
    "listener is on loopback)",
    effective=_anonymous_effective,
)
option(
    "security",
    "sys_users",
    string_list,
    [],
    "users that may read $SYS/... topics and see every topic's metadata",
)
option(
    "security",
    "admin_users",
    string_list,
    [],
    "users that see and manage every user's cursors and see all metadata (no ACL grants this)",
)
option(
    "security",
    "webhook_urls",
    webhook_spec.allowed_urls,
    [],
    "where webhooks may point: http(s) URL prefixes (scheme, host or *.domain, port, "
    "path); empty: any URL (docs/consumers.md)",
)
option(
    "security",
    "require_tls_for_credentials",
    boolean,
    _security.require_tls_for_credentials,
    "with [tls] configured, refuse passwords and tokens on listeners without TLS",
)
option(
    "security",
    "auth_failures_per_address",
    integer(1),
    _security.auth_failures_per_address,
    "failed logins per remote address within the window before it is refused",
)
option(
    "security",
    "auth_failures_per_user",
    integer(1),
    _security.auth_failures_per_user,
    "failed logins per user name within the window before it is locked",
)
option(
    "security",
    "auth_failure_window",
    seconds,
    _security.auth_failure_window,
    "seconds a failed login counts",
)
option(
    "security",
    "tls_ca_file",
    optional(string),
    None,
    "PEM CA bundle verifying client certificates (enables them)",
)
option(
    "security",
    "tls_require_client_cert",
    boolean,
    False,
    "refuse TLS clients without a valid certificate",
)
option(
    "security",
    "tls_cert_username",
    boolean,
    False,
    "use a verified client certificate's CN as the user name",
)
option("security", "http_tls", boolean, False, "serve the REST port over HTTPS ([tls] cert/key)")
option("security", "ws_tls", boolean, False, "serve the WebSocket port as WSS ([tls] cert/key)")
option(
    "security",
    "max_connections",
    optional(integer(1)),
    _security.max_connections,
    "open client connections on all listeners together (MQTT, WebSocket, HTTP)",
)
option(
    "security",
    "max_connections_per_address",
    optional(integer(1)),
    _security.max_connections_per_address,
    "open connections from one remote address",
)
option(
    "security",
    "max_subscriptions",
    integer(1),
    _security.max_subscriptions,
    "subscriptions one MQTT client may hold",
)
for _name, _what in (
    ("topic", "topic name a client may publish to"),
    ("filter", "topic filter a client may subscribe or read with"),
    ("cursor_name", "cursor name"),
    ("client_id", "MQTT client id"),
    ("user_property_key", "user property key on a published event"),
    ("link_name", "link name"),
    ("webhook_name", "webhook name"),
):
    option(
        "security",
        f"max_{_name}_bytes",
        integer(1, MAX_NAME_BYTES),
        getattr(_security, f"max_{_name}_bytes"),
        f"longest {_what}, in UTF-8 bytes (400 / MQTT 0x90 or 0x95 beyond; docs/security.md)",
    )
for _name, _what in (
    ("cursors", "durable cursors one user may own"),
    ("retained", "retained messages one user may have set"),
    ("subscriptions", "live subscriptions one user may hold over all connections"),
    ("sessions", "persistent MQTT sessions one user may own"),
):
    option(
        "security",
        f"max_{_name}_per_user",
        integer(1),
        getattr(_security, f"max_{_name}_per_user"),
        f"{_what} (429 quota_exceeded / MQTT 0x97 beyond)",
    )

section("websocket", "the WebSocket listener: /mqtt (MQTT over WebSocket) and /v1/ws")
option("websocket", "port", port, 8083, "off disables it", flag="--ws-port")

section("http", "the REST API, /metrics and /healthz")
option("http", "port", port, 8080, "off disables it", flag="--http-port")
option(
    "http",
    "max_body_bytes",
    size,
    16 * 1024 * 1024 + 64 * 1024,
    "largest request body (413 past it)",
)
option("http", "access_log", boolean, True, "log one line per request (logger tidelog.access)")
option(
    "http",
    "metrics_cursor_labels",
    boolean,
    False,
    "label /metrics series per cursor (cursor and owner names; each user sees their own)",
)

section("broker", "the engine: group commit and subscriber queues")
option(
    "broker",
    "feed_max_events",
    integer(1),
    _broker.feed_max_events,
    "events a subscriber may have queued before it reads from the log instead",
)
option(
    "broker",
    "feed_max_bytes",
    size,
    _broker.feed_max_bytes,
    "payload bytes a subscriber may have queued before it reads from the log instead",
)
option(
    "broker",
    "max_batch_events",
    integer(1),
    _broker.max_batch_events,
    "most events one group commit holds",
)
option(
    "broker", "max_batch_bytes", size, _broker.max_batch_bytes, "most bytes one group commit holds"
)
option(
    "broker",
    "max_pending_bytes",
    size,
    _broker.max_pending_bytes,
    "publishers wait (back-pressure) while this much waits to be committed",
)
option(
    "broker",
    "retained_flush_seconds",
    seconds,
    _broker.retained_flush_seconds,
    "how often retained messages are persisted (the log replays the rest after a crash)",
)
option(
    "broker",
    "session_expiry_check_seconds",
    seconds,
    _broker.session_expiry_check_seconds,
    "how often expired MQTT sessions are removed",
)

section("sys", "$SYS/broker/... status topics over MQTT")
option("sys", "enabled", boolean, True, "publish $SYS topics")
option("sys", "interval", seconds, 10.0, "seconds between updates")

section("logging", "log output (standard error)")
option(
    "logging",
    "level",
    choice("debug", "info", "warning", "error"),
    "info",
    "lowest level logged",
    flag="--log-level",
)
option(
    "logging",
    "format",
    choice("text", "json"),
    "text",
    "text: one human-readable line per record; json: one JSON object per line",
    flag="--log-format",
)

section("node", "this node in an event mesh (docs/mesh.md)")
option(
    "node",
    "id",
    optional_node_id,
    None,
    "the node's one id, in the mesh and in a cluster (`/v1/cluster`), unique in both; off: "
    "a stable id generated once and stored in the data directory, or on a shared `kafka://` "
    "log `<host name>-<MQTT port>` (docs/cluster.md)",
    flag="--node-id",
)
table_array(
    "link",
    parse_links,
    LinkConfig.shown,
    "links this node dials (docs/mesh.md); from the TOML file only",
)
table_array(
    "webhook",
    webhook_spec.parse_tables,
    webhook_spec.shown,
    "webhooks: HTTP push of events (docs/consumers.md); from the TOML file and REST only",
)
