"""Fan-out 1 -> 100 and connection accept rate: tidelog checkouts beside mosquitto.

    python -m bench.investigations.fanout_check [--messages 3000] [--repeat 3] [--connections 5000]
                                 [--baseline DIR] [--skip-accept]

Fan-out: one QoS 1 publisher (window 1000) -> 100 subscribers at QoS 1 (the
issue 7 shape), through ``bench.mqtt_load.run_scenario``; prints deliveries/s
and broker CPU microseconds per delivery. Accept: ``--connections`` MQTT 3.1.1
connections opened 200 at a time (``tidelog.testing.overload.hold_connections``);
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
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from bench.brokers import PEERS, Tidelog
from bench.load_scenarios import SCENARIOS
from bench.mqtt_load import run_scenario
from bench.process_stats import process_cpu_seconds
from tidelog.testing.mqtt_client import Target
from tidelog.testing.overload import hold_connections

FANOUT = SCENARIOS["fanout-100"]


@asynccontextmanager
async def broker(name: str, baseline: Path | None) -> AsyncIterator[Target]:
    """A fresh broker: this checkout's tidelog, the baseline checkout's, or a peer."""
    peer = Tidelog(baseline, name="baseline") if name == "baseline" and baseline else PEERS[name]
    with tempfile.TemporaryDirectory(prefix="fanout-check-") as tmp:
        async with peer.start(Path(tmp)) as running:
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
