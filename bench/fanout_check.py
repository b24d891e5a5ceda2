"""Fan-out 1 -> 100 and connection accept rate: tidelog checkouts beside mosquitto.

    python -m bench.fanout_check [--messages 3000] [--repeat 3] [--connections 5000]
                                 [--baseline DIR] [--skip-accept]

Fan-out: one QoS 1 publisher (window 1000) -> 100 subscribers at QoS 1 (the
issue 7 shape), through ``bench.mqtt_load.run_scenario``; prints deliveries/s
and broker CPU microseconds per delivery. Accept: ``--connections`` MQTT 3.1.1
connections opened 200 at a time (``bench.overload.hold_connections``);
prints connections/s. Brokers alternate within each repetition: this
checkout's tidelog, the ``--baseline`` checkout's tidelog if given (e.g. a
``git worktree`` or ``git archive`` of the code before a change), and
mosquitto with ``max_queued_messages 0``, ``max_inflight_messages 0``. tidelog
runs with fsync ``always`` on LMDB in a temp directory, ``--log-level warning``.

The suite's fan-out scenario (``bench.mqtt_compare``) is the reference; this
script exists to compare a change against its baseline in one run.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from bench.brokers import HOST, PEERS, free_port
from bench.mqtt_load import Scenario, Target, process_cpu_seconds, run_scenario
from bench.overload import hold_connections

REPO = Path(__file__).resolve().parent.parent

FANOUT = Scenario(
    "fanout-100",
    "QoS 1 publisher, window 1000 -> 100 subscribers at QoS 1 (deliveries/s)",
    publish_qos=1,
    window=1000,
    subscribers=100,
    messages=3000,
    quick_messages=100,
)


@asynccontextmanager
async def tidelog(checkout: Path) -> AsyncIterator[Target]:
    """``python -m tidelog serve`` from ``checkout`` until the block exits."""
    with tempfile.TemporaryDirectory(prefix="tidelog-fanout-") as tmp:
        port = free_port()
        argv = [sys.executable, "-m", "tidelog", "serve", "--storage"]
        argv += [f"lmdb://{tmp}/log?fsync=always", "--bind", HOST, "--mqtt-port", str(port)]
        argv += ["--ws-port", "off", "--http-port", "off", "--log-level", "warning"]
        process = subprocess.Popen(argv, cwd=checkout, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    stream = await trio.open_tcp_stream(HOST, port)
                    await stream.aclose()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"tidelog from {checkout} did not start") from None
                    await trio.sleep(0.05)
            yield Target(HOST, port, process.pid)
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                print(f"tidelog from {checkout} still running 20 s after SIGTERM: killed")
                process.kill()
                process.wait()


@asynccontextmanager
async def broker(name: str, baseline: Path | None) -> AsyncIterator[Target]:
    if name == "tidelog" or name == "baseline":
        async with tidelog(REPO if name == "tidelog" else baseline or REPO) as target:
            yield target
        return
    with tempfile.TemporaryDirectory(prefix="fanout-peer-") as tmp:
        async with PEERS[name].start(Path(tmp)) as running:
            yield Target(running.host, running.port, running.pid)


async def main(args: argparse.Namespace) -> None:
    names = ["tidelog", *(["baseline"] if args.baseline else []), "mosquitto-unlimited"]
    for repetition in range(args.repeat):
        for name in names:
            async with broker(name, args.baseline) as target:
                result = await run_scenario(target, FANOUT, broker=name, messages=args.messages)
                per = (result.broker_cpu_s or 0) / max(1, result.delivered) * 1e6
                print(
                    f"#{repetition + 1} fan-out {name:20} {result.rate:8.0f} deliveries/s, "
                    f"broker CPU {per:5.2f} us/delivery, lost {result.lost}, "
                    f"duplicated {result.duplicated}",
                    flush=True,
                )
            if args.skip_accept:
                continue
            async with broker(name, args.baseline) as target:
                assert target.pid is not None
                cpu = process_cpu_seconds(target.pid) or 0.0
                held = await hold_connections(target.host, target.port, args.connections, hold=0.2)
                cpu = (process_cpu_seconds(target.pid) or 0.0) - cpu
                print(
                    f"#{repetition + 1} accept  {name:20} {held.connected / held.seconds:8.0f} "
                    f"connections/s ({held.connected} in {held.seconds:.1f} s), broker CPU "
                    f"{cpu / max(1, held.connected) * 1e6:5.0f} us/connection (open to close)",
                    flush=True,
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--baseline", type=Path, help="another tidelog checkout to compare")
    parser.add_argument("--skip-accept", action="store_true")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trio.run(main, parser.parse_args())
