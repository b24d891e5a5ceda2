"""Interop with Debian's mosquitto_pub / mosquitto_sub, and a persistent session across
a restart of the ``tidelog serve`` process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.protocols.mqtt.server_helpers import Client, ServerThread, wait_for

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_pub") is None, reason="mosquitto-clients is not installed"
)


def mosquitto_sub(port: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-W", "20", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def mosquitto_pub(port: int, *args: str) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), *args],
        check=True,
        timeout=20,
        capture_output=True,
    )


def subscribed(server: ServerThread, count: int) -> None:
    """Wait until ``count`` MQTT connections exist (mosquitto_sub has subscribed soon
    after connecting; the SUBACK is checked by its exit status)."""
    assert server.running is not None
    mqtt = server.running.context.mqtt
    wait_for(lambda: len(mqtt.connections) >= count, what=f"{count} connections")
    wait_for(
        lambda: all(
            c._feed is not None and c._feed.subscriptions for c in mqtt.connections.values()
        ),
        what="subscriptions",
    )


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5", "mqttv31"])
@pytest.mark.parametrize("qos", ["0", "1", "2"])
def test_pub_sub_each_qos_and_version(server: ServerThread, version: str, qos: str) -> None:
    sub = mosquitto_sub(server.port, "-V", version, "-q", qos, "-t", "m/#", "-C", "3", "-v")
    subscribed(server, 1)
    for i in range(3):
        mosquitto_pub(server.port, "-V", version, "-q", qos, "-t", f"m/{i}", "-m", f"hello {i}")
    out, err = sub.communicate(timeout=20)
    assert sub.returncode == 0, err
    assert out.splitlines() == [f"m/{i} hello {i}" for i in range(3)]


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5", "mqttv31"])
def test_retained_and_dollar_topics(server: ServerThread, version: str) -> None:
    v = ("-V", version)
    mosquitto_pub(server.port, *v, "-t", "status/dev1", "-m", "online", "-r", "-q", "1")
    mosquitto_pub(server.port, *v, "-t", "$internal/x", "-m", "hidden", "-r", "-q", "1")
    sub = mosquitto_sub(server.port, *v, "-t", "#", "-C", "1", "-v", "-F", "%t %p %r")
    out, err = sub.communicate(timeout=20)
    assert out.splitlines() == ["status/dev1 online 1"], err
    sub = mosquitto_sub(server.port, *v, "-t", "$internal/#", "-C", "1", "-v")
    assert sub.communicate(timeout=20)[0].splitlines() == ["$internal/x hidden"]


@pytest.mark.parametrize("version", ["mqttv311", "mqttv5", "mqttv31"])
def test_will_of_a_killed_mosquitto_sub(server: ServerThread, version: str) -> None:
    watcher = Client(server.port)
    try:
        watcher.subscribe("lwt/#", 1)
        victim = mosquitto_sub(
            server.port, "-V", version, "-t", "x", "--will-topic", "lwt/victim",
            "--will-payload", "dead", "--will-qos", "1", "-k", "30",
        )  # fmt: skip
        subscribed(server, 2)
        victim.kill()
        victim.wait()
        message = watcher.receive()[0]
        assert (message.topic, message.payload) == ("lwt/victim", b"dead")
    finally:
        watcher.disconnect()


def start_tidelog(tmp_path: Path) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        [
            sys.executable, "-m", "tidelog", "serve", "--storage", f"sqlite://{tmp_path}/log.db",
            "--mqtt-port", "0", "--ws-port", "off", "--http-port", "off",
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        match = re.search(r"MQTT listening on [\d.]+:(\d+)", line)
        if match:
            return process, int(match.group(1))
    raise AssertionError(f"tidelog serve did not start: {process.wait()}")


def stop_tidelog(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0


def test_persistent_session_across_a_restart_of_tidelog_serve(tmp_path: Path) -> None:
    process, port = start_tidelog(tmp_path)
    try:
        sub = Client(port, "restarting", clean=False)
        sub.subscribe("fleet/#", 1)
        mosquitto_pub(port, "-t", "fleet/1", "-m", "before", "-q", "1")
        assert sub.receive()[0].payload == b"before"
        mosquitto_pub(port, "-t", "fleet/1", "-m", "in flight", "-q", "1")
        sub.receive()
    finally:
        sub.paho.loop_stop()  # still connected while the server stops
        stop_tidelog(process)
    sub.drop()
    process, port = start_tidelog(tmp_path)
    try:
        mosquitto_pub(port, "-t", "fleet/2", "-m", "while away", "-q", "1")
        stop_tidelog(process)
        process, port = start_tidelog(tmp_path)
        out = mosquitto_sub(
            port, "-c", "-i", "restarting", "-q", "1", "-t", "fleet/#", "-C", "1", "-v"
        ).communicate(timeout=20)[0]
        assert out.splitlines() == ["fleet/2 while away"]
    finally:
        stop_tidelog(process)
