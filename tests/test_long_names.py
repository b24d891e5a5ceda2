"""Names a client chooses, at every length up to the protocol maximum, through a real
``tidelog serve`` on LMDB: they are stored or refused clearly, and the server keeps
running and restarts cleanly afterwards.

The regression behind it: a retained publish on a topic of about 505 bytes was
acknowledged, then the process exited ("state key ... is 512 bytes; the limit is
511", LMDB's key limit) and exited again on every restart.
"""

from __future__ import annotations

import base64
import signal
from pathlib import Path

import httpx
import paho.mqtt.client as paho

from tests.protocols.mqtt.server_helpers import Client, clients
from tests.serve_process import start_server
from tidelog.testing.server import ServerProcess

# Every length around LMDB's 511-byte key limit (with and without the state
# namespace's prefix), short ones, and the MQTT maximum of 65,535 bytes.
LENGTHS = sorted({*range(1, 12), *range(490, 530), 600, 1_000, 4_096, 20_000, 65_535})


def topic_of(length: int, mark: str) -> str:
    return (f"{mark}/" + "x" * 65_535)[:length] if length > 2 else mark[:length]


def serve(tmp_path: Path) -> ServerProcess:
    return start_server(
        tmp_path,
        "--storage",
        f"lmdb://{tmp_path}/data",
        "--mqtt-port",
        "0",
        "--http-port",
        "0",
        "--ws-port",
        "off",
        "--set",
        "broker.retained_flush_seconds=0.05",
        # storage itself must hold every length: lift the name maxima (docs/security.md)
        "--set",
        "security.max_topic_bytes=65535",
        "--set",
        "security.max_filter_bytes=65535",
        "--set",
        "security.max_client_id_bytes=65535",
        expect=("MQTT", "HTTP"),
    )


def retained_topics(port: int, expected: int) -> dict[str, bytes]:
    """The retained messages a new subscriber to ``#`` receives."""
    with clients(Client(port)) as (reader,):
        reader.subscribe("#", 1)
        return {m.topic: m.payload for m in reader.receive(expected)}


def test_retained_publishes_of_every_topic_length_survive_restarts(tmp_path: Path) -> None:
    server = serve(tmp_path)
    expected: dict[str, bytes] = {}
    try:
        with clients(Client(server.ports["MQTT"], version=paho.MQTTv5)) as (publisher,):
            for length in LENGTHS:
                topic = topic_of(length, "m")
                publisher.publish(topic, b"mqtt-%d" % length, qos=1, retain=True)
                expected[topic] = b"mqtt-%d" % length
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for length in LENGTHS:
                topic = topic_of(length, "r")
                payload = base64.b64encode(b"rest-%d" % length).decode()
                response = http.post(
                    "/v1/events",
                    json={"events": [{"topic": topic, "payload": payload, "retain": True}]},
                )
                assert response.status_code == 201, response.text
                expected[topic] = b"rest-%d" % length
            short = topic_of(300, "p")
            response = http.post(f"/v1/topics/{short}", params={"retain": "true"}, content=b"p")
            assert response.status_code == 201, response.text
            expected[short] = b"p"
        assert retained_topics(server.ports["MQTT"], len(expected)) == expected
        assert server.process.poll() is None, server.output
    finally:
        assert server.stop() == 0, server.output

    for stop in (signal.SIGTERM, signal.SIGKILL):
        server = serve(tmp_path)
        try:
            assert retained_topics(server.ports["MQTT"], len(expected)) == expected
            with httpx.Client(base_url=server.url, timeout=30) as http:
                topics = http.get("/v1/topics").json()
            listed = {t["topic"] for t in topics["topics"]}
            assert set(expected) <= listed
        finally:
            if stop == signal.SIGKILL:
                server.kill()
            else:
                assert server.stop() == 0, server.output
        assert "Traceback" not in server.output, server.output


def test_persistent_sessions_with_client_ids_of_every_length(tmp_path: Path) -> None:
    """A persistent session under a long client id keeps its subscription and
    offline messages across a restart (a 604-byte client id used to be dropped)."""
    lengths = [1, 23, 500, 505, 511, 604, 4_096, 65_535]
    server = serve(tmp_path)
    try:
        port = server.ports["MQTT"]
        for length in lengths:
            session = Client(port, "c" * length, version=paho.MQTTv5, session_expiry=3600)
            session.subscribe(f"offline/{length}", 1)
            session.disconnect()
    finally:
        assert server.stop() == 0, server.output
    server = serve(tmp_path)
    try:
        port = server.ports["MQTT"]
        with clients(Client(port)) as (publisher,):
            for length in lengths:
                publisher.publish(f"offline/{length}", b"%d" % length, qos=1)
        for length in lengths:
            session = Client(port, "c" * length, version=paho.MQTTv5, session_expiry=3600,
                             clean=False)  # fmt: skip
            assert session.flags.session_present
            [message] = session.receive(1)
            assert (message.topic, message.payload) == (f"offline/{length}", b"%d" % length)
            session.disconnect()
    finally:
        assert server.stop() == 0, server.output
