"""Pending wills survive a broker restart: a real ``tidelog serve``, stopped by SIGTERM
or killed with SIGKILL while a client's will waits for its Will Delay Interval,
publishes that will after it starts again, when it is due; a will its client came
back for before the stop is not published."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from tests.protocols.mqtt.server_helpers import Client, wait_for
from tests.serve_process import start_server
from tidelog.testing.server import ServerProcess

V5 = 5
QUIET = ("--ws-port", "off", "--http-port", "off")
DELAY = 4


def serve(tmp_path: Path, url: str) -> ServerProcess:
    return start_server(tmp_path, "--storage", url, "--mqtt-port", "0", *QUIET, expect=("MQTT",))


def with_will(port: int, client_id: str, delay: int) -> Client:
    props = PahoProperties(PacketTypes.WILLMESSAGE)
    props.WillDelayInterval = delay
    return Client(
        port,
        client_id,
        version=V5,
        clean=False,
        session_expiry=600,
        will=(f"wills/{client_id}", b"gone: " + client_id.encode(), 1, False),
        will_properties=props,
    )


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
@pytest.mark.parametrize("scheme", ["lmdb", "sqlite"])
def test_a_pending_will_is_published_after_the_broker_restarts(
    tmp_path: Path, stop: signal.Signals, scheme: str
) -> None:
    url = f"lmdb://{tmp_path}/data" if scheme == "lmdb" else f"sqlite://{tmp_path}/log.db"
    server = serve(tmp_path, url)
    try:
        port = server.ports["MQTT"]
        # The watcher's persistent session receives the wills whenever they are published.
        watcher = Client(port, "watcher", version=V5, clean=False, session_expiry=600)
        watcher.subscribe("wills/#", 1)
        back = with_will(port, "comes-back", 1)  # due first: if published, it comes first
        back.drop()
        wait_for(lambda: "'comes-back' on 'wills/comes-back' stored" in server.output, 10)
        back = with_will(port, "comes-back", 1)  # back in time: the will is cancelled
        gone = with_will(port, "gone-for-good", DELAY)
        gone.drop()
        dropped_at = time.monotonic()
        wait_for(lambda: "'gone-for-good' on 'wills/gone-for-good' stored" in server.output, 10)
        watcher.drop()
        back.disconnect()  # a normal DISCONNECT: no will
        if stop == signal.SIGKILL:
            server.kill()
        else:
            assert server.stop(stop) == 0
        assert watcher.nothing_more(0)  # no will came while the first broker ran
    finally:
        server.kill()

    server = serve(tmp_path, url)
    try:
        watcher = Client(server.ports["MQTT"], "watcher", version=V5, clean=False,
                         session_expiry=600)  # fmt: skip
        (will,) = watcher.receive(1, timeout=30)
        assert (will.topic, will.payload, will.qos) == (
            "wills/gone-for-good", b"gone: gone-for-good", 1
        )  # fmt: skip
        assert time.monotonic() - dropped_at >= DELAY - 0.1  # when due, not at the start
        watcher.disconnect()
    finally:
        assert server.stop() == 0
