"""TLS on every listener (MQTT 8883, WSS, HTTPS) with client-certificate authentication:
the certificate's CN is the user name, and the ACL applies to it."""

from __future__ import annotations

import json
import queue
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
import trio
import trio_websocket

from tests.protocols.mqtt.server_helpers import Client, ServerThread
from tests.security.certs import PKI, make_pki
from tests.security.conftest import config, write_acl, write_users


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_config(tmp_path: Path, pki: PKI, **security: Any) -> Any:
    settings: dict[str, Any] = {
        "password_file": str(write_users(tmp_path)),
        "acl_file": str(write_acl(tmp_path)),
        "allow_anonymous": False,
        "tls_ca_file": pki.ca,
        "tls_cert_username": True,
        "http_tls": True,
        "ws_tls": True,
        **security,
    }
    server_config = config(tmp_path, **settings)
    server_config.mqtt_tls_port = 0
    server_config.tls_cert, server_config.tls_key = pki.server.cert, pki.server.key
    return server_config


def client_context(pki: PKI, pair: Any = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)
    if pair is not None:
        context.load_cert_chain(pair.cert, pair.key)
    return context


def tls_client(server: ServerThread, pki: PKI, pair: Any, **kwargs: Any) -> Client:
    client = Client(server.ports("MQTT-TLS"), version=paho.MQTTv5, connect=False, **kwargs)
    client.paho.tls_set_context(client_context(pki, pair))
    return client


def test_mqtt_tls_client_certificate_is_the_user(
    make_server: Callable[..., ServerThread], tmp_path: Path, pki: PKI
) -> None:
    server = make_server(tls_config(tmp_path, pki))
    alice = tls_client(server, pki, pki.alice)
    alice.connect()  # no user name or password: the certificate's CN
    try:
        assert alice.subscribe("alice/#", 1) == (1,)
        assert alice.subscribe("bob/#", 1) == (0x87,)
        alice.publish("alice/x", b"over tls", 1)
        assert alice.receive()[0].payload == b"over tls"
    finally:
        alice.disconnect()
    # optional client certificates: without one, CONNECT credentials decide
    anonymous = tls_client(server, pki, None)
    with pytest.raises(AssertionError, match="CONNACK"):
        anonymous.connect()
    anonymous.paho.loop_stop()
    bob = tls_client(server, pki, None)
    bob.paho.username_pw_set("bob", "bob-pw")
    bob.connect()
    bob.disconnect()


def test_mqtt_tls_refuses_unknown_or_missing_certificates_when_required(
    make_server: Callable[..., ServerThread], tmp_path: Path, pki: PKI
) -> None:
    server = make_server(tls_config(tmp_path, pki, tls_require_client_cert=True))
    for pair in (None, pki.stranger):
        client = tls_client(server, pki, pair)
        try:  # TLS 1.3: the client learns of the refusal after its handshake
            client.paho.connect("127.0.0.1", client.port)
            client.paho.loop_start()
            with pytest.raises(queue.Empty):
                client.connack.get(timeout=2)
        except (ssl.SSLError, OSError):
            pass
        finally:
            client.paho.loop_stop()
    alice = tls_client(server, pki, pki.alice)
    alice.connect()
    alice.disconnect()


def test_https_client_certificate_and_basic(
    make_server: Callable[..., ServerThread], tmp_path: Path, pki: PKI
) -> None:
    server = make_server(tls_config(tmp_path, pki))
    base = f"https://127.0.0.1:{server.ports('HTTP')}"
    with httpx.Client(base_url=base, verify=client_context(pki, pki.alice)) as alice:
        assert alice.post("/v1/topics/alice/x", content=b"1").status_code == 201
        assert alice.post("/v1/topics/bob/x", content=b"1").status_code == 403
    with httpx.Client(base_url=base, verify=client_context(pki)) as nobody:
        assert nobody.get("/v1/topics").status_code == 401
        assert nobody.get("/v1/topics", auth=("bob", "bob-pw")).status_code == 200
    plain_http = httpx.Client(base_url=f"http{base[5:]}")
    with pytest.raises((httpx.ConnectError, httpx.RemoteProtocolError)), plain_http as plain:
        plain.get("/v1/topics")


def test_https_refuses_a_certificate_of_another_ca(
    make_server: Callable[..., ServerThread], tmp_path: Path, pki: PKI
) -> None:
    server = make_server(tls_config(tmp_path, pki))
    base = f"https://127.0.0.1:{server.ports('HTTP')}"
    with (
        pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)),
        httpx.Client(base_url=base, verify=client_context(pki, pki.stranger)) as client,
    ):
        client.get("/v1/topics")


def test_wss_client_certificate(
    make_server: Callable[..., ServerThread], tmp_path: Path, pki: PKI
) -> None:
    server = make_server(tls_config(tmp_path, pki))
    port = server.ports("WebSocket")

    async def main() -> None:
        context = client_context(pki, pki.alice)
        async with trio_websocket.open_websocket(
            "127.0.0.1", port, "/v1/ws", use_ssl=context
        ) as ws:
            await ws.send_message(
                json.dumps({"type": "publish", "id": 1, "topic": "alice/x", "payload": "eA=="})
            )
            await ws.send_message(
                json.dumps({"type": "publish", "id": 2, "topic": "bob/x", "payload": "eA=="})
            )
            with trio.fail_after(10):
                replies = [json.loads(await ws.get_message()) for _ in range(2)]
            by_id = {reply["id"]: reply for reply in replies}
            assert by_id[1]["type"] == "ack" and by_id[2]["status"] == 403
        with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
            async with trio_websocket.open_websocket(
                "127.0.0.1", port, "/v1/ws", use_ssl=client_context(pki)
            ):
                pass
        assert rejected.value.status_code == 401
        # MQTT over WSS: the certificate identifies the client too
        from tidelog.protocols.mqtt import Connack, Connect, Decoder, Role, encode

        async with trio_websocket.open_websocket(
            "127.0.0.1", port, "/mqtt", use_ssl=context, subprotocols=["mqtt"]
        ) as ws:
            await ws.send_message(encode(Connect("wss-1", 5), 5))
            with trio.fail_after(10):
                (connack,) = Decoder(5, role=Role.CLIENT).feed(await ws.get_message())
            assert isinstance(connack, Connack) and connack.reason_code == 0

    trio.run(main)
