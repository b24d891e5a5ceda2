"""``tidelog serve`` as an operator sees it, end to end through subprocesses: startup
errors, SIGTERM during a QoS 1 publish storm, MQTT 5 DISCONNECT 0x8B, $SYS topics,
/metrics, JSON logs with connection context."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from tests.protocols.mqtt.server_helpers import Client, wait_for
from tests.serve_process import run, start_server

QUIET = ("--ws-port", "off", "--http-port", "off")


def one_error_line(result_stderr: str) -> str:
    assert "Traceback" not in result_stderr
    lines = result_stderr.strip().splitlines()
    assert lines[-1].startswith("tidelog: "), result_stderr
    return lines[-1]


# -- startup errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "flag"), [("MQTT", "--mqtt-port"), ("WebSocket", "--ws-port"), ("HTTP", "--http-port")]
)
def test_port_in_use(tmp_path: Path, name: str, flag: str) -> None:
    """Every listener names itself and the address it could not bind."""
    off = ("--mqtt-port", "off", "--ws-port", "off", "--http-port", "off")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--storage", "memory://", *off, flag, str(port), cwd=tmp_path)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert f"{name} cannot listen on 127.0.0.1:{port}" in line
    assert "in use" in line


def test_every_listener_off_is_refused(tmp_path: Path) -> None:
    """Not a server that starts and stops at once without a word."""
    off = ("--mqtt-port", "off", "--ws-port", "off", "--http-port", "off")
    result = run("serve", "--storage", "memory://", *off, cwd=tmp_path)
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "every listener is off" in line and "nothing to serve" in line
    # an MQTT-TLS port without a certificate does not count as a listener
    result = run("serve", "--storage", "memory://", *off, "--mqtt-tls-port", "8883", cwd=tmp_path)
    assert result.returncode == 1 and "every listener is off" in one_error_line(result.stderr)


def test_locked_data_directory(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/log.db"
    server = start_server(tmp_path, "--storage", url, "--mqtt-port", "0", *QUIET, expect=("MQTT",))
    try:
        result = run("serve", "--storage", url, "--mqtt-port", "0", *QUIET, cwd=tmp_path)
        assert result.returncode == 1
        assert "open in another process" in one_error_line(result.stderr)
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("damage", ["not-a-directory", "not-a-database"])
def test_unusable_data_directory(tmp_path: Path, damage: str) -> None:
    if damage == "not-a-directory":
        (tmp_path / "file").write_text("x")
        url = f"sqlite://{tmp_path}/file/log.db"
    else:
        (tmp_path / "log.db").write_bytes(b"\x13garbage" * 1000)
        url = f"sqlite://{tmp_path}/log.db"
    result = run("serve", "--storage", url, "--mqtt-port", "0", *QUIET, cwd=tmp_path)
    assert result.returncode == 1
    assert "sqlite log" in one_error_line(result.stderr)


def test_bad_flag_value_is_a_usage_error(tmp_path: Path) -> None:
    result = run("serve", "--http-port", "eighty", cwd=tmp_path)
    assert result.returncode == 2
    assert "not a port number" in result.stderr


# -- shutdown ----------------------------------------------------------------------------


def test_sigterm_during_qos1_storm_keeps_every_acknowledged_event(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/log.db"
    server = start_server(tmp_path, "--storage", url, "--mqtt-port", "0", *QUIET, expect=("MQTT",))
    port = server.ports["MQTT"]
    acked_ids: list[tuple[int, int]] = []  # (client, packet mid): mids stay below 65536
    disconnects: list[int] = []
    clients: list[tuple[paho.Client, dict[int, bytes]]] = []
    try:
        for n in range(3):
            client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=f"storm-{n}", protocol=paho.MQTTv5
            )
            client.max_inflight_messages_set(100)
            client.on_publish = lambda c, u, mid, rc, p, n=n: (
                acked_ids.append((n, mid)) if not rc.is_failure else None
            )
            client.on_disconnect = lambda c, u, f, rc, p: disconnects.append(rc.value)
            client.connect("127.0.0.1", port)
            client.loop_start()
            wait_for(client.is_connected, timeout=10)
            clients.append((client, {}))

        stop = threading.Event()

        def storm(client: paho.Client, sent: dict[int, bytes], n: int) -> None:
            for i in range(20_000):
                if stop.is_set() or not client.is_connected():
                    return
                payload = b"%d-%d" % (n, i)
                sent[client.publish(f"storm/{n}", payload, qos=1).mid] = payload
                if i % 50 == 0:
                    time.sleep(0.002)

        threads = [
            threading.Thread(target=storm, args=(c, s, n), daemon=True)
            for n, (c, s) in enumerate(clients)
        ]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(acked_ids) > 1000, timeout=30)
        assert server.stop() == 0
        assert server.stop_seconds < 10
        stop.set()
        for thread in threads:
            thread.join(5)
        wait_for(lambda: len(disconnects) >= 3, timeout=10)
        assert 0x8B in disconnects  # "Server shutting down" for MQTT 5 clients
    finally:
        for client, _ in clients:
            client.loop_stop()
        server.kill()
    acked = {clients[n][1][mid] for n, mid in acked_ids}
    assert "SIGTERM received: shutting down" in server.output
    # every acknowledged event is in the log after the restart
    replay = run("replay", "#", "--format", "raw", "--storage", url, cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    stored = replay.stdout.encode().split(b"\n")
    assert acked <= set(stored)
    assert len(stored) - 1 == len(set(stored) - {b""})  # and only once


# -- $SYS --------------------------------------------------------------------------------


def test_sys_topics(tmp_path: Path) -> None:
    # $SYS is readable by the users named in [security] sys_users only
    made = run("passwd", str(tmp_path / "users"), "ops", "--password-stdin", "--scrypt-n",
               "1024", cwd=tmp_path, input="secret\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    server = start_server(tmp_path, "--storage", "memory://", "--mqtt-port", "0",
                          "--http-port", "0", "--ws-port", "off", "--set", "sys.interval=0.2",
                          "--set", f"security.password_file={tmp_path / 'users'}",
                          expect=("MQTT", "HTTP"), TIDELOG_SECURITY_SYS_USERS="ops")  # fmt: skip
    port = server.ports["MQTT"]
    try:
        everything = Client(port, version=paho.MQTTv5)
        everything.subscribe("#", 0)
        watcher = Client(port, version=paho.MQTTv311, connect=False)
        watcher.paho.username_pw_set("ops", "secret")
        watcher.connect()
        watcher.subscribe("$SYS/broker/#", 0)
        first: dict[str, paho.MQTTMessage] = {}
        latest: dict[str, paho.MQTTMessage] = {}
        for message in _drain(watcher, 1.0):
            first.setdefault(message.topic, message)  # the snapshot at SUBSCRIBE: retained
            latest[message.topic] = message
        assert "$SYS/broker/uptime" in first and first["$SYS/broker/uptime"].retain
        assert first["$SYS/broker/uptime"].payload.endswith(b" seconds")
        for name in ("clients/connected", "messages/received", "messages/sent", "bytes/received",
                     "bytes/sent", "log/next-offset", "log/first-offset", "version"):  # fmt: skip
            assert f"$SYS/broker/{name}" in first, name
        assert int(latest["$SYS/broker/clients/connected"].payload) == 2
        everything.publish("a/b", b"x", qos=1)
        # periodic updates follow (not retained), and show the publish
        wait_for(
            lambda: any(
                m.topic == "$SYS/broker/log/next-offset" and m.payload == b"1" and not m.retain
                for m in _drain(watcher, 0.5)
            ),
            timeout=10,
        )
        # not matched by '#', and not in the log
        assert [m.topic for m in _drain(everything, 0.5)] == ["a/b"]
        events = httpx.get(f"{server.url}/v1/events").json()["events"]
        assert [e["topic"] for e in events] == ["a/b"]
        everything.disconnect()
        watcher.disconnect()
    finally:
        assert server.stop() == 0


def test_sys_topics_can_be_switched_off(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--storage", "memory://", "--mqtt-port", "0", *QUIET,
                          expect=("MQTT",), TIDELOG_SYS_ENABLED="false")  # fmt: skip
    try:
        watcher = Client(server.ports["MQTT"], version=paho.MQTTv311)
        watcher.subscribe("$SYS/#", 0)
        assert _drain(watcher, 1.0) == []
        watcher.disconnect()
    finally:
        assert server.stop() == 0


def _drain(client: Client, seconds: float) -> list[paho.MQTTMessage]:
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            out.append(client.messages.get(timeout=max(0.01, deadline - time.monotonic())))
        except Exception:
            break
    return out


# -- /metrics and logs -------------------------------------------------------------------


def _metrics(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = httpx.get(f"{url}/metrics").text
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_parse_and_move(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--storage", f"sqlite://{tmp_path}/log.db", "--mqtt-port", "0",
                          "--http-port", "0", "--ws-port", "off", "--log-format", "json",
                          "--set", "http.metrics_cursor_labels=yes",
                          expect=("MQTT", "HTTP"))  # fmt: skip
    try:
        before = _metrics(server.url)
        mqtt = (("protocol", "mqtt"),)
        assert before["tidelog_connections"][mqtt] == 0
        subscriber = Client(server.ports["MQTT"], "metrics-sub", version=paho.MQTTv5)
        subscriber.subscribe("m/#", 1)
        publisher = Client(server.ports["MQTT"], "metrics-pub", version=paho.MQTTv5)
        for i in range(20):
            publisher.publish("m/x", b"p%02d" % i, qos=1)
        wait_for(lambda: subscriber.messages.qsize() >= 20, timeout=10)
        httpx.put(f"{server.url}/v1/cursors/lagging", json={"filter": "m/#", "start": "earliest"})
        after = _metrics(server.url)
        assert after["tidelog_connections"][mqtt] == 2
        assert after["tidelog_published_events_total"][()] >= 20
        assert after["tidelog_published_bytes_total"][()] >= 60
        assert after["tidelog_deliveries_total"][()] >= 20
        assert after["tidelog_delivered_bytes_total"][()] >= 60
        assert after["tidelog_publishes_received_total"][mqtt] >= 20
        assert after["tidelog_publishes_sent_total"][mqtt] >= 20
        assert (
            after["tidelog_received_bytes_total"][mqtt]
            > before["tidelog_received_bytes_total"][mqtt]
        )
        assert after["tidelog_sent_bytes_total"][mqtt] > 0
        assert after["tidelog_commit_batch_events_count"][()] >= 1
        assert after["tidelog_commit_batch_events_sum"][()] >= 20
        assert after["tidelog_commit_duration_seconds_count"][()] >= 1
        buckets = after["tidelog_commit_duration_seconds_bucket"]
        assert buckets[(("le", "+Inf"),)] == after["tidelog_commit_duration_seconds_count"][()]
        assert after["tidelog_log_next_offset"][(("backend", "sqlite"),)] >= 20
        lagging = (("cursor", "lagging"), ("owner", "anonymous"))
        assert after["tidelog_cursor_lag"][lagging] >= 20
        for name in ("tidelog_retained_messages", "tidelog_sessions", "tidelog_log_segments",
                     "tidelog_log_first_offset", "tidelog_log_bytes", "tidelog_catch_ups_total",
                     "tidelog_malformed_packets_total", "tidelog_rejected_packets_total",
                     "tidelog_connections_rejected_total"):  # fmt: skip
            assert name in after, name
        # a malformed packet is counted
        with socket.create_connection(("127.0.0.1", server.ports["MQTT"])) as raw:
            raw.sendall(b"\x10\x05\x00\x04XXXX")
            raw.settimeout(5)
            with contextlib.suppress(OSError):
                raw.recv(100)
        wait_for(
            lambda: _metrics(server.url)["tidelog_malformed_packets_total"][mqtt] >= 1, timeout=5
        )
        subscriber.disconnect()
        publisher.disconnect()
    finally:
        assert server.stop() == 0
    # JSON logs: one object per line, with the connection's context; the access log
    records = [json.loads(line) for line in server.lines if line.startswith("{")]
    assert records and len(records) == len([line for line in server.lines if line.strip()])
    connected = [r for r in records if r["message"].startswith("connected")]
    assert {r.get("client_id") for r in connected} >= {"metrics-sub", "metrics-pub"}
    assert all(
        r["protocol"] == "mqtt/tcp" and r["remote"].startswith("127.0.0.1:") for r in connected
    )
    assert any(r["logger"] == "tidelog.access" and "GET /metrics" in r["message"] for r in records)


async def test_sigterm_closes_native_websocket_with_going_away(tmp_path: Path) -> None:
    import trio
    import trio_websocket

    server = start_server(tmp_path, "--storage", "memory://", "--mqtt-port", "off", "--http-port",
                          "off", "--ws-port", "0", expect=("WebSocket",))  # fmt: skip
    try:
        async with trio_websocket.open_websocket(
            "127.0.0.1", server.ports["WebSocket"], "/v1/ws", use_ssl=False,
            subprotocols=["tidelog.v1"],
        ) as ws:  # fmt: skip
            await ws.send_message('{"type": "subscribe", "id": 1, "filter": "#"}')
            assert json.loads(await ws.get_message())["type"] == "subscribed"
            server.process.send_signal(15)
            with pytest.raises(trio_websocket.ConnectionClosed) as closed, trio.fail_after(10):
                while True:
                    await ws.get_message()
            assert closed.value.reason.code == 1001
        assert server.wait_exit() == 0
    finally:
        server.kill()
