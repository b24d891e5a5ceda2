"""Same-run A/B of MQTT scenarios: tidelog checkouts and mosquitto, one after another.

    python -m bench.investigations.same_run e2e-qos1-1k=10000,qos1-publish-w100=20000 \\
        mosquitto=-,base=/tmp/tree-cf14467,s19=. --rounds 2

Each broker is started on its own port, measured by ``python -m
bench.mqtt_load --port P --pid PID --scenario S --messages N --json`` and
stopped; rounds alternate the order. A tidelog "tree" is a directory holding a
``tidelog`` package (``git archive COMMIT tidelog | tar -x -C DIR``), put first
on ``PYTHONPATH``; the broker runs as the bench's tidelog peer does (LMDB,
``fsync=always``, MQTT only, ``--log-level warning``). ``mosquitto`` runs with
``max_queued_messages 0``, ``max_inflight_messages 0``, ``set_tcp_nodelay
true``. ``bench.compare`` does the same with repeats and tables but its start-up
timeout is too short for a loaded machine; this prints one line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _wait_port(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing accepts on port {port} after {timeout:g} s")


def start(name: str, tree: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """Start mosquitto (``name`` starting with it) or tidelog from ``tree`` on ``port``."""
    log = (workdir / "broker.log").open("w")
    if name.startswith("mosquitto"):
        conf = workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n"
            "log_dest stderr\nlog_type error\npersistence false\nset_tcp_nodelay true\n"
            "max_queued_messages 0\nmax_inflight_messages 0\n"
        )
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        process = subprocess.Popen([binary, "-c", str(conf)], stderr=log)
    else:
        storage = f"lmdb://{workdir}/log?fsync=always"
        process = subprocess.Popen(
            [sys.executable, "-m", "tidelog", "serve", "--storage", storage,
             "--bind", "127.0.0.1", "--mqtt-port", str(port), "--ws-port", "off",
             "--http-port", "off", "--log-level", "warning"],
            env={**os.environ, "PYTHONPATH": str(Path(tree).resolve())},
            cwd=workdir,
            stderr=log,
        )  # fmt: skip
    _wait_port(port)
    return process


def measure(scenario: str, messages: str, port: int, pid: int) -> list[dict[str, object]]:
    """Run one scenario against the broker; its JSON result lines."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.mqtt_load", "--port", str(port), "--pid", str(pid),
         "--scenario", scenario, "--messages", messages, "--json"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if result.returncode:
        print(f"  {scenario} exited {result.returncode}: {result.stderr[-300:]}", flush=True)
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def describe(round_: int, broker: str, row: dict[str, object]) -> str:
    """One line: rate, broker CPU per message (per delivery, or per accepted publish)."""
    counted = row.get("delivered") or row.get("accepted") or 0
    cpu = row.get("broker_cpu_s")
    per = 1e6 * float(cpu) / float(counted) if cpu and counted else float("nan")  # type: ignore[arg-type]
    rss = float(row.get("peak_rss_bytes") or 0) / 2**20  # type: ignore[arg-type]
    anon = float(row.get("peak_rss_anon_bytes") or 0) / 2**20  # type: ignore[arg-type]
    return (
        f"r{round_} {row['scenario']!s:18} {broker:12} rate {float(row['rate']):9,.0f}/s "  # type: ignore[arg-type]
        f"cpu/msg {per:7.1f} us  peak RSS {rss:4.0f} MiB (anon {anon:3.0f})  "
        f"lost {row['lost']} dup {row['duplicated']} errors {row['errors']}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.investigations.same_run")
    parser.add_argument("scenarios", help="scenario=messages,...")
    parser.add_argument("brokers", help="name=tree,... (mosquitto=- for mosquitto)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--port", type=int, default=22100, help="first port (then +1 per run)")
    args = parser.parse_args(argv)
    scenarios = [item.split("=") for item in args.scenarios.split(",")]
    brokers = [item.split("=", 1) for item in args.brokers.split(",")]
    port = args.port
    for round_ in range(args.rounds):
        for scenario, messages in scenarios:
            for name, tree in brokers if round_ % 2 == 0 else brokers[::-1]:
                port += 1
                with tempfile.TemporaryDirectory(prefix="tidelog-same-run-") as tmp:
                    process = start(name, tree, port, Path(tmp))
                    try:
                        rows = measure(scenario, messages, port, process.pid)
                    finally:
                        process.terminate()
                        process.wait(30)
                for row in rows:
                    print(describe(round_, name, row), flush=True)


if __name__ == "__main__":
    main()
