"""Interop with MQTT.js (the npm ``mqtt`` package on the machine's Node.js), over TCP
and WebSocket, at MQTT 3.1.1 and 5.0: QoS 0/1/2, wildcard subscriptions, granted QoS,
retained messages, wills, and (5.0) user properties and content type.

``tests/interop/mqttjs_scenario.cjs`` runs the clients and prints what they saw;
``scripts/test.sh`` installs the package into ``tests/interop/node_modules``
(``npm install --prefix tests/interop``). Missing Node.js or the package fails the
test: the interop result must not silently disappear from CI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.protocols.mqtt.server_helpers import ServerThread

INTEROP = Path(__file__).resolve().parents[2] / "interop"


def run_scenario(url: str, version: int, prefix: str) -> dict[str, object]:
    node = shutil.which("node")
    assert node is not None, "Node.js is not installed (scripts/test.sh needs it)"
    assert (INTEROP / "node_modules" / "mqtt").is_dir(), (
        "MQTT.js is not installed: npm install --prefix tests/interop (scripts/test.sh does)"
    )
    done = subprocess.run(
        [node, str(INTEROP / "mqttjs_scenario.cjs"), url, str(version), prefix],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, done.stdout + done.stderr
    result: dict[str, object] = json.loads(lines[-1])
    return result


@pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])
@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_mqttjs(server: ServerThread, transport: str, version: int) -> None:
    if transport == "tcp":
        url = f"mqtt://127.0.0.1:{server.port}"
    else:
        url = f"ws://127.0.0.1:{server.ports('WebSocket')}/mqtt"
    prefix = f"js-{transport}-{version}"
    result = run_scenario(url, version, prefix)
    assert result["granted"] == [1, 2, 1]
    received = result["received"]
    assert isinstance(received, list)
    seen = [(m["topic"], m["payload"], m["qos"], m["retain"]) for m in received]
    # MQTT.js emits a QoS 2 message when PUBREL comes, after QoS 0/1 messages sent
    # later: the order across topics and QoS levels is the client's, not compared.
    assert sorted(seen) == sorted(
        [
            (f"{prefix}/deep/q0", "deep 0", 0, False),
            (f"{prefix}/deep/q1", "deep 1", 1, False),
            (f"{prefix}/deep/q2", "deep 2", 2, False),
            (f"{prefix}/a/plus", "plus", 1, False),  # granted QoS 1 caps the QoS 2 publish
            (f"{prefix}/will", "gone", 1, False),  # a/b/plus matched nothing: + is one level
        ]
    )
    if version == 5:
        deep = sorted((m for m in received if "/deep/" in m["topic"]), key=lambda m: m["topic"])
        assert [(m["userProperties"], m["contentType"]) for m in deep] == [
            ({"k": f"v{qos}"}, "text/plain") for qos in range(3)
        ]
    retained = result["retained"]
    assert isinstance(retained, dict)
    assert (retained["topic"], retained["payload"], retained["qos"], retained["retain"]) == (
        f"{prefix}/retained", "kept", 1, True
    )  # fmt: skip
