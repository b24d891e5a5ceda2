"""Interop with paho-mqtt 3.1.1 and 5.0 over TCP: CONNECT, PUBLISH, SUBSCRIBE, QoS 0/1/2."""

from __future__ import annotations

import paho.mqtt.client as paho
import pytest

from tests.protocols.mqtt.server_helpers import Client, ServerThread, clients


@pytest.mark.parametrize("version", [paho.MQTTv311, paho.MQTTv5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_subscribe_each_qos(server: ServerThread, version: int, qos: int) -> None:
    with clients(Client(server.port, version=version), Client(server.port, version=version)) as (
        sub,
        pub,
    ):
        granted = sub.subscribe("sensors/+/temp", qos)
        assert [getattr(g, "value", g) for g in granted] == [qos]
        for i in range(20):
            pub.publish(f"sensors/{i % 3}/temp", b"%d" % i, qos)
        got = sub.receive(20)
        assert [m.payload for m in got] == [b"%d" % i for i in range(20)]
        assert {m.qos for m in got} == {qos}
        assert sub.nothing_more()
