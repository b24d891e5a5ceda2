"""The origin's CPU per event with and without a live link pulling from it
(docs/mesh.md, "The origin's cost per event").

One origin (``storage.fsync = always``, as ``bench.mesh``) takes ``--rounds``
``qos1-publish-w1000`` runs alone, then a receiver whose link pulls
``tidelog-bench/#`` connects and the same runs go on with the link carrying them
(:func:`bench.mesh_live.link_alone`). Each round prints the rates, the CPU µs
per event of each process (/proc) and the origin's group commits (``/v1/stats``), so
a checkout is compared with another by alternating runs (``PYTHONPATH`` picks the
code)::

    PYTHONPATH=$PWD python -m bench.mesh_origin --messages 40000 --rounds 2

``--hold SECONDS`` starts the pair and waits instead (after printing the pids and
MQTT and HTTP ports), to profile the origin under ``bench/mqtt_load.py`` (``py-spy record
-p PID``); ``--alone`` holds the origin without the receiver.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx
import trio

from bench.brokers import HOST, free_port, spawn
from bench.mesh import _connected, _tidelog_argv
from bench.mesh_live import FILTER, env, link_alone, load, rate_of
from bench.process_stats import process_cpu_seconds

CATCH_UP_SECONDS = 3.0
"""What the receiver gets to catch up on the origin's alone rounds before the link
rounds start (20,000 events take well under a second)."""


async def commits(http: int) -> tuple[int, int, float]:
    """The origin's group commits so far: (commits, events, seconds committing)."""
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"http://{HOST}:{http}/v1/stats", timeout=10)).json()
    writer = stats["writer"]
    return int(writer["batches"]), int(writer["events"]), float(writer["commit_seconds_total"])


def commit_note(before: tuple[int, int, float], after: tuple[int, int, float]) -> str:
    """What the origin's writer did between two :func:`commits`: how many commits, of
    how many events each and how long each took (fewer, larger commits: a shorter cycle
    per event at ``fsync = always``)."""
    batches, events, seconds = (a - b for a, b in zip(after, before, strict=True))
    batches = max(1, int(batches))
    return (
        f"{batches} commits of {events / batches:.0f} events, {seconds * 1e3 / batches:.2f} ms each"
    )


async def run(messages: int, rounds: int, hold: float | None, alone: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-origin-") as tmp:
        workdir = Path(tmp)
        mqtt, http = free_port(), free_port()
        argv = _tidelog_argv(workdir, "origin", mqtt, http, '[node]\nid = "origin"\n')
        async with spawn("origin", argv, workdir, mqtt, env=env()) as origin:
            await _connected(http, links=False)
            for _ in range(rounds if hold is None else 0):
                before = process_cpu_seconds(origin.pid) or 0.0
                written = await commits(http)
                rate = rate_of(await trio.to_thread.run_sync(load, mqtt, messages))
                cpu = ((process_cpu_seconds(origin.pid) or 0.0) - before) * 1e6 / messages
                note = commit_note(written, await commits(http))
                print(
                    f"single-node ingest {rate:,.0f} msg/s; CPU µs per event: origin {cpu:.1f}; "
                    f"{note}"
                )
            if hold is not None and alone:
                print(f"origin pid {origin.pid} mqtt {mqtt} http {http}", flush=True)
                await trio.sleep(hold)
                return
            far_mqtt, far_http = free_port(), free_port()
            config = (
                '[node]\nid = "receiver"\n[[link]]\nname = "origin"\n'
                f'url = "mqtt://{HOST}:{mqtt}"\npull = ["{FILTER}"]\n'
            )
            far_argv = _tidelog_argv(workdir, "receiver", far_mqtt, far_http, config)
            async with spawn("receiver", far_argv, workdir, far_mqtt, env=env()) as receiver:
                await _connected(far_http)
                await trio.sleep(CATCH_UP_SECONDS)
                if hold is not None:
                    pids = f"origin pid {origin.pid} mqtt {mqtt} http {http}"
                    print(f"{pids}; receiver pid {receiver.pid}", flush=True)
                    await trio.sleep(hold)
                    return
                pids = {"origin": origin.pid, "receiver": receiver.pid}
                for _ in range(rounds):
                    written = await commits(http)
                    result = await link_alone(mqtt, messages, (http, far_http), pids)
                    note = commit_note(written, await commits(http))
                    cpu = result["cpu_us_per_event"]
                    print(
                        f"live link {result['link_rate']:,.0f} events/s (generator acked "
                        f"{result['ingest_rate']:,.0f} msg/s); CPU µs per event: origin "
                        f"{cpu['origin']:.1f}, receiver {cpu['receiver']:.1f}, generator "
                        f"{result['generator_cpu_us_per_message']:.1f}; "
                        f"{result['events_per_batch']:.0f} events per batch; "
                        f"machine idle {result['idle']:.0%}; origin: {note}"
                    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hold", type=float, help="start the pair and wait this long")
    parser.add_argument("--alone", action="store_true", help="--hold the origin alone")
    args = parser.parse_args(argv)
    trio.run(run, args.messages, args.rounds, args.hold, args.alone)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
