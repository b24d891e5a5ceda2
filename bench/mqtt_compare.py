"""Side-by-side MQTT benchmark: every scenario against every broker, in one run.

    python -m bench.mqtt_compare                      # all brokers, all scenarios, 3 repeats
    python -m bench.mqtt_compare --brokers mosquitto,mosquitto-unlimited
    python -m bench.mqtt_compare --quick              # smoke run (CI): small counts, 1 repeat
    python -m bench.mqtt_compare --protocol 5 --json bench/results/mqtt.json

Each measurement starts a fresh broker (bench/brokers.py) on a free port of
127.0.0.1, runs one scenario (bench/mqtt_load.py) and stops the broker. Runs
interleave brokers within each repeat (in alternating order), so drift on a
shared machine hits every broker alike. The table shows medians over the
repeats and each broker against the baseline (tidelog when it runs): the
baseline's rate divided by the broker's, or for latency scenarios the broker's
p99 divided by the baseline's, so above 1.00 means the baseline is ahead.
Lost and duplicated messages are summed over all repeats and printed loudly.

Exit status: 0 when every measurement ran (whatever the numbers), 1 when a
measurement failed (broker did not start, connection refused or broken,
protocol error, a stalled run), 2 when a requested broker cannot run here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.brokers import PEERS, Peer, PeerError
from bench.mqtt_load import (
    SCENARIOS,
    LoadError,
    Scenario,
    ScenarioResult,
    Target,
    format_result,
    parse_names,
    parse_protocol,
    run_scenario,
    scenario_names,
)


@attrs.frozen
class Summary:
    """Medians over the repeats of one scenario on one broker; counts are sums."""

    scenario: str
    broker: str
    runs: int
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    latency_kind: str
    broker_cpu_us_per_msg: float | None
    client_cpu_share: float
    lost: int
    duplicated: int
    refused: int
    failed_runs: int
    window: int | None
    vs_baseline: float | None = None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(
    results: list[ScenarioResult], scenario: Scenario, broker: str, baseline: Summary | None
) -> Summary:
    good = [r for r in results if not r.errors]
    counted = good or results
    with_subscribers = scenario.subscribers > 0
    latencies = [
        latency
        for r in counted
        if (latency := r.latency if with_subscribers else r.ack_latency) is not None
    ]
    cpu = [
        r.broker_cpu_s * 1e6 / (r.delivered if with_subscribers else r.accepted)
        for r in counted
        if r.broker_cpu_s is not None and (r.delivered if with_subscribers else r.accepted)
    ]

    def ms(values: list[int]) -> float | None:
        median = _median([v / 1e6 for v in values])
        return median

    summary = Summary(
        scenario=scenario.name,
        broker=broker,
        runs=len(results),
        rate=_median([r.rate for r in counted]) or 0.0,
        p50_ms=ms([lat.p50_ns for lat in latencies]),
        p99_ms=ms([lat.p99_ns for lat in latencies]),
        p999_ms=ms([lat.p999_ns for lat in latencies]),
        latency_kind="delivery" if with_subscribers else "ack",
        broker_cpu_us_per_msg=_median(cpu),
        client_cpu_share=_median([r.client_cpu_s / r.elapsed_s for r in counted if r.elapsed_s])
        or 0.0,
        lost=sum(r.lost for r in results),
        duplicated=sum(r.duplicated for r in results),
        refused=sum(r.refused for r in results),
        failed_runs=len(results) - len(good),
        window=min((r.window for r in counted if r.window is not None), default=None),
    )
    if baseline is None:
        return summary
    if scenario.rate is not None:  # fixed rate: compare p99 latency, lower is better
        if summary.p99_ms and baseline.p99_ms:
            return attrs.evolve(summary, vs_baseline=summary.p99_ms / baseline.p99_ms)
    elif summary.rate and baseline.rate:
        return attrs.evolve(summary, vs_baseline=baseline.rate / summary.rate)
    return summary


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(summaries: list[Summary], baseline: str | None) -> str:
    vs = f"vs {baseline}" if baseline else "vs -"
    header = (
        f"{'scenario':<20} {'broker':<20} {'msg/s':>10} {vs:>12} {'lost':>8} {'dup':>6} "
        f"{'CPU us/msg':>10} {'client':>7} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8}"
    )
    lines = [header, "-" * len(header)]
    previous = None
    for s in summaries:
        if previous is not None and s.scenario != previous:
            lines.append("")
        previous = s.scenario
        lost = f"{s.lost}!!" if s.lost else "0"
        dup = f"{s.duplicated}!!" if s.duplicated else "0"
        ratio = _cell(s.vs_baseline, ".2f") + ("x" if s.vs_baseline is not None else "")
        kind = " (ack)" if s.latency_kind == "ack" and s.p50_ms is not None else ""
        failed = f"  FAILED {s.failed_runs}/{s.runs}" if s.failed_runs else ""
        scenario_window = SCENARIOS[s.scenario].window
        if s.window is not None and s.window < scenario_window:
            failed += f"  window {s.window} (broker's Receive Maximum)"
        lines.append(
            f"{s.scenario:<20} {s.broker:<20} {s.rate:>10,.0f} {ratio:>12} {lost:>8} {dup:>6} "
            f"{_cell(s.broker_cpu_us_per_msg, '.1f'):>10} {s.client_cpu_share:>6.0%} "
            f"{_cell(s.p50_ms, '.2f'):>7} {_cell(s.p99_ms, '.2f'):>7} "
            f"{_cell(s.p999_ms, '.2f'):>8}{kind}{failed}"
        )
    return "\n".join(lines)


def format_markdown(summaries: list[Summary], baseline: str | None) -> str:
    """The summary as a Markdown table, for docs/benchmarks.md."""
    vs = f"vs {baseline}" if baseline else "vs -"
    lines = [
        f"| scenario | broker | msg/s | {vs} | lost | dup | CPU us/msg | client "
        "| p50 ms | p99 ms | p99.9 ms |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in summaries:
        ack = " (ack)" if s.latency_kind == "ack" and s.p50_ms is not None else ""
        if s.window is not None and s.window < SCENARIOS[s.scenario].window:
            ack += f" (window {s.window})"
        lost = f"**{s.lost}**" if s.lost else "0"
        dup = f"**{s.duplicated}**" if s.duplicated else "0"
        ratio = "-" if s.vs_baseline is None else f"{s.vs_baseline:.2f}x"
        lines.append(
            f"| {s.scenario}{ack} | {s.broker} | {s.rate:,.0f} | {ratio} | {lost} | {dup} "
            f"| {_cell(s.broker_cpu_us_per_msg, '.1f')} | {s.client_cpu_share:.0%} "
            f"| {_cell(s.p50_ms, '.2f')} | {_cell(s.p99_ms, '.2f')} | {_cell(s.p999_ms, '.2f')} |"
        )
    return "\n".join(lines)


LEGEND = """\
msg/s: accepted/s (acked; QoS 0: confirmed by PINGRESP) without subscribers, delivered/s with.
vs X: X's rate / this broker's rate; latency scenarios: this p99 / X's p99 (> 1.00: X ahead).
lost, dup: summed over all repeats. CPU us/msg: broker CPU (user+system) per message.
client: load generator CPU / wall time (near 100% means the client limits the rate).
p50/p99/p99.9: publish -> delivery with a subscriber, publish -> PUBACK "(ack)" without."""


async def measure(
    peer: Peer, scenario: Scenario, *, level: int, quick: bool, scale: float
) -> ScenarioResult:
    """Start ``peer`` fresh, run ``scenario`` once, stop it; failures become errors."""
    count = None
    if scale != 1.0:
        count = max(1, round((scenario.quick_messages if quick else scenario.messages) * scale))
    try:
        with tempfile.TemporaryDirectory(prefix=f"mqtt-bench-{peer.name}-") as tmp:
            async with peer.start(Path(tmp)) as running:
                target = Target(running.host, running.port, running.pid)
                return await run_scenario(
                    target,
                    scenario,
                    broker=peer.name,
                    protocol_level=level,
                    quick=quick,
                    messages=count,
                )
    except (LoadError, PeerError, OSError, ExceptionGroup) as exc:
        # recorded and reported as a failed measurement (exit status 1); the rest still run
        result = ScenarioResult(scenario.name, peer.name, level, 0)
        result.errors.append(f"{type(exc).__name__}: {exc}")
        return result


def _meta(args: argparse.Namespace, peers: list[Peer], repeat: int) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "protocol_level": args.protocol,
        "quick": args.quick,
        "repeat": repeat,
        "brokers": {
            peer.name: {"version": peer.version(), "about": peer.description} for peer in peers
        },
        "scenarios": {
            name: {
                "description": SCENARIOS[name].description,
                "messages": round(
                    (SCENARIOS[name].quick_messages if args.quick else SCENARIOS[name].messages)
                    * args.scale
                ),
            }
            for name in args.scenarios
        },
    }


async def run_all(
    args: argparse.Namespace, peers: list[Peer], repeat: int, emit: Callable[[str], None]
) -> list[tuple[int, ScenarioResult]]:
    results: list[tuple[int, ScenarioResult]] = []
    for run in range(repeat):
        for name in args.scenarios:
            order = peers if run % 2 == 0 else peers[::-1]
            for peer in order:
                result = await measure(
                    peer, SCENARIOS[name], level=args.protocol, quick=args.quick, scale=args.scale
                )
                results.append((run, result))
                emit(f"[run {run + 1}/{repeat}] {format_result(result)}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mqtt_compare",
        description="Run every MQTT scenario against every broker; print medians and ratios.",
    )
    parser.add_argument(
        "--brokers",
        type=lambda text: parse_names(text, list(PEERS), "broker"),
        default=list(PEERS),
        help=f"comma-separated; default all: {','.join(PEERS)}",
    )
    parser.add_argument(
        "--scenarios",
        type=scenario_names,
        default=list(SCENARIOS),
        help=f"comma-separated; default all: {','.join(SCENARIOS)}",
    )
    parser.add_argument("--repeat", type=int, help="runs per measurement (default 3, quick 1)")
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    parser.add_argument("--protocol", type=parse_protocol, default=4, help="3.1.1 (default) or 5")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    parser.add_argument("--baseline", default="tidelog", help="broker the others are compared with")
    parser.add_argument("--json", type=Path, help="write every result and the summary here")
    parser.add_argument(
        "--markdown", action="store_true", help="print the summary as a Markdown table too"
    )
    args = parser.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)

    peers = [PEERS[name] for name in args.brokers]
    blocked = [(peer.name, reason) for peer in peers if (reason := peer.unavailable())]
    if blocked:
        for name, reason in blocked:
            print(f"mqtt_compare: cannot run {name}: {reason}", file=sys.stderr)
        return 2
    baseline = args.baseline if args.baseline in args.brokers else None

    meta = _meta(args, peers, repeat)
    print(f"MQTT benchmark {meta['date']} on {meta['host']}, Python {meta['python']}")
    print(f"protocol level {args.protocol}, {repeat} run(s) per measurement, 100-byte payloads")
    for peer in peers:
        print(f"  {peer.name}: {peer.description} [{peer.version()}]")
    for name, info in meta["scenarios"].items():
        print(f"  {name}: {info['description']}, {info['messages']:,} messages")
    print(flush=True)

    results = trio.run(run_all, args, peers, repeat, lambda line: print(line, flush=True))

    summaries: list[Summary] = []
    for name in args.scenarios:
        by_broker = {
            peer.name: [r for _, r in results if r.scenario == name and r.broker == peer.name]
            for peer in peers
        }
        base = summarize(by_broker[baseline], SCENARIOS[name], baseline, None) if baseline else None
        for peer in peers:
            summaries.append(summarize(by_broker[peer.name], SCENARIOS[name], peer.name, base))

    print()
    print(format_table(summaries, baseline))
    print()
    print(LEGEND)
    if args.markdown:
        print()
        print(format_markdown(summaries, baseline))
    damaged = [s for s in summaries if s.lost or s.duplicated or s.refused]
    if damaged:
        print("\n!!! MESSAGES LOST OR DUPLICATED !!!")
        for s in damaged:
            print(
                f"!!! {s.scenario} on {s.broker}: lost {s.lost}, duplicated {s.duplicated}, "
                f"refused {s.refused} (over {s.runs} run(s))"
            )
    failures = [(run, r) for run, r in results if r.errors]
    if failures:
        print("\nFAILED MEASUREMENTS:")
        for run, r in failures:
            print(f"  run {run + 1} {r.scenario} on {r.broker}: {'; '.join(r.errors[:3])}")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "meta": meta,
            "summary": [attrs.asdict(s) for s in summaries],
            "results": [{"run": run + 1, **r.to_dict()} for run, r in results],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
