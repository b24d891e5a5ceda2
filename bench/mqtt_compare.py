"""Side-by-side MQTT benchmark: every scenario against every broker, in one run.

    python -m bench.mqtt_compare                      # all brokers, all scenarios, 3 repeats
    python -m bench.mqtt_compare --brokers mosquitto,nats,tidelog --scenarios e2e-qos1,fanout-100
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
Scenarios marked heavy (idle-10k, burst) run ``--repeat-heavy`` times (default
1). ``--quick`` also measures the brokers concurrently (one sequence of
measurements per broker, all at once), so the smoke run takes as long as the
slowest broker; ``--sequential`` keeps the one-at-a-time order of full runs.
A broker that cannot run a scenario (nats and amqtt speak MQTT 3.1.1 only,
nats has no QoS 2) is skipped for it, and the table says so. A slow broker's
runs are capped (``Peer.work_cap``, ``Peer.connection_cap``: amqtt) and the
table says to what.

JSON (``--json``), a superset of what earlier versions wrote:

* ``meta``: ``date`` (UTC), ``host``, ``python``, ``protocol_level``,
  ``quick``, ``repeat``; added: ``repeat_heavy``, ``concurrent`` (true: the
  brokers ran at the same time, a smoke run), ``command`` (argv),
  ``machine`` (cpu count, model, memory, kernel, load average at the start,
  fd limit); ``brokers`` {name: {version, about; added: ``protocol_levels``,
  ``max_qos``, ``work_cap``, ``connection_cap``}}, ``scenarios`` {name:
  {description, messages; added: ``kind``, ``figure`` (what the rate counts),
  ``publishers``, ``subscribers``, ``payload_size``, ``heavy``}}.
* ``summary``: one :class:`Summary` per (scenario, broker) that ran, fields as
  before plus ``figure``, ``messages`` (per publisher per run, after any cap),
  ``capped_from``, ``peak_rss_mib`` and ``peak_rss_anon_mib`` (medians of
  the runs' peaks, VmRSS and RssAnon), ``rss_anon_per_connection_kib`` and
  ``rss_per_connection_kib`` (idle, medians), ``drain_s`` (burst, median).
* ``results``: every run, ``{"run": n, **ScenarioResult.to_dict()}``, the
  fields listed on :class:`bench.load_results.ScenarioResult` (added:
  ``rss_start_bytes``, ``rss_anon_start_bytes``, ``peak_rss_bytes``,
  ``peak_rss_anon_bytes``, ``connections``, ``rss_per_connection_bytes``,
  ``rss_anon_per_connection_bytes``, ``drain_s``, ``capped_from``).
* ``skipped`` (added): ``[{"scenario", "broker", "reason"}]``, pairs not run
  because the broker cannot do the scenario; they appear in neither
  ``summary`` nor ``results``.

Exit status: 0 when every measurement ran (whatever the numbers), 1 when a
measurement failed (broker did not start, connection refused or broken,
protocol error, a stalled run), 2 when a requested broker cannot run here.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import resource
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

from bench.brokers import DEFAULT_PEERS, PEERS, Peer, Tidelog
from bench.disk_probe import describe, fdatasync_latency, format_probe
from bench.load_results import MIB, ScenarioResult, format_result
from bench.load_scenarios import SCENARIOS, Scenario
from bench.mqtt_load import parse_names, parse_protocol, run_scenario, scenario_names
from bench.process_stats import raise_fd_limit
from tidelog.testing.mqtt_client import Target


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
    figure: str = ""
    messages: int = 0
    capped_from: int | None = None
    peak_rss_mib: float | None = None
    peak_rss_anon_mib: float | None = None
    rss_anon_per_connection_kib: float | None = None
    rss_per_connection_kib: float | None = None
    drain_s: float | None = None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(
    results: list[ScenarioResult], scenario: Scenario, broker: str, baseline: Summary | None
) -> Summary:
    good = [r for r in results if not r.errors]
    counted = good or results
    # idle and burst: no delivery latency; burst CPU is per published message
    with_subscribers = scenario.subscribers > 0 and scenario.kind in ("load", "trickle")
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

    def optional(values: list[float | None], unit: float) -> float | None:
        present = [v / unit for v in values if v is not None]
        return _median(present)

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
        figure=scenario.figure,
        messages=max((r.messages for r in counted), default=0),
        capped_from=max((r.capped_from for r in counted if r.capped_from), default=None),
        peak_rss_mib=optional([r.peak_rss_bytes for r in counted], MIB),
        peak_rss_anon_mib=optional([r.peak_rss_anon_bytes for r in counted], MIB),
        rss_anon_per_connection_kib=optional(
            [r.rss_anon_per_connection_bytes for r in counted], 1024
        ),
        rss_per_connection_kib=optional([r.rss_per_connection_bytes for r in counted], 1024),
        drain_s=optional([r.drain_s for r in counted], 1.0),
    )
    if baseline is None:
        return summary
    if scenario.rate is not None and summary.latency_kind == "delivery":
        # fixed rate: compare p99 latency, lower is better
        if summary.p99_ms and baseline.p99_ms:
            return attrs.evolve(summary, vs_baseline=summary.p99_ms / baseline.p99_ms)
    elif summary.rate and baseline.rate:
        return attrs.evolve(summary, vs_baseline=baseline.rate / summary.rate)
    return summary


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def notes(s: Summary) -> str:
    """What the columns cannot show: capped counts, idle memory, burst drain, a small window."""
    parts = []
    if s.rss_anon_per_connection_kib is not None:
        parts.append(
            f"{s.rss_anon_per_connection_kib:.1f} KiB anon RSS/conn "
            f"(VmRSS {_cell(s.rss_per_connection_kib, '.1f')})"
        )
    if s.drain_s is not None:
        parts.append(f"drained in {s.drain_s:.1f} s")
    if s.capped_from is not None:
        parts.append(f"capped: {s.messages:,} of {s.capped_from:,}")
    if s.window is not None and s.window < SCENARIOS[s.scenario].window:
        parts.append(f"window {s.window} (broker's Receive Maximum)")
    return "; ".join(parts)


def format_table(
    summaries: list[Summary], baseline: str | None, skipped: Sequence[Skip] = ()
) -> str:
    vs = f"vs {baseline}" if baseline else "vs -"
    header = (
        f"{'scenario':<20} {'broker':<20} {'rate/s':>10} {vs:>12} {'lost':>8} {'dup':>6} "
        f"{'CPU us/msg':>10} {'client':>7} {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} "
        f"{'peak MiB':>8}"
    )
    lines = [header, "-" * len(header)]
    skips: dict[str, list[Skip]] = {}
    for skip in skipped:
        skips.setdefault(skip.scenario, []).append(skip)
    order = list(dict.fromkeys([*(s.scenario for s in summaries), *skips]))
    for scenario in order:
        if len(lines) > 2:
            lines.append("")
        for s in (s for s in summaries if s.scenario == scenario):
            lost = f"{s.lost}!!" if s.lost else "0"
            dup = f"{s.duplicated}!!" if s.duplicated else "0"
            ratio = _cell(s.vs_baseline, ".2f") + ("x" if s.vs_baseline is not None else "")
            kind = " (ack)" if s.latency_kind == "ack" and s.p50_ms is not None else ""
            failed = f"  FAILED {s.failed_runs}/{s.runs}" if s.failed_runs else ""
            note = notes(s)
            lines.append(
                f"{s.scenario:<20} {s.broker:<20} {s.rate:>10,.0f} {ratio:>12} {lost:>8} "
                f"{dup:>6} {_cell(s.broker_cpu_us_per_msg, '.1f'):>10} "
                f"{s.client_cpu_share:>6.0%} {_cell(s.p50_ms, '.2f'):>7} "
                f"{_cell(s.p99_ms, '.2f'):>7} {_cell(s.p999_ms, '.2f'):>8} "
                f"{_cell(s.peak_rss_mib, '.0f'):>8}{kind}{failed}" + (f"  {note}" if note else "")
            )
        for skip in skips.get(scenario, []):
            lines.append(f"{scenario:<20} {skip.broker:<20} {'SKIPPED':>10}  {skip.reason}")
    return "\n".join(lines)


def format_markdown(
    summaries: list[Summary], baseline: str | None, skipped: Sequence[Skip] = ()
) -> str:
    """The summary as a Markdown table, for docs/benchmarks.md."""
    vs = f"vs {baseline}" if baseline else "vs -"
    lines = [
        f"| scenario | broker | rate/s | {vs} | lost | dup | CPU us/msg | client "
        "| p50 ms | p99 ms | p99.9 ms | peak RSS MiB | notes |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for s in summaries:
        ack = " (ack)" if s.latency_kind == "ack" and s.p50_ms is not None else ""
        lost = f"**{s.lost}**" if s.lost else "0"
        dup = f"**{s.duplicated}**" if s.duplicated else "0"
        ratio = "-" if s.vs_baseline is None else f"{s.vs_baseline:.2f}x"
        failed = f"FAILED {s.failed_runs}/{s.runs}; " if s.failed_runs else ""
        lines.append(
            f"| {s.scenario}{ack} | {s.broker} | {s.rate:,.0f} | {ratio} | {lost} | {dup} "
            f"| {_cell(s.broker_cpu_us_per_msg, '.1f')} | {s.client_cpu_share:.0%} "
            f"| {_cell(s.p50_ms, '.2f')} | {_cell(s.p99_ms, '.2f')} | {_cell(s.p999_ms, '.2f')} "
            f"| {_cell(s.peak_rss_mib, '.0f')} | {failed}{notes(s)} |"
        )
    for skip in skipped:
        lines.append(
            f"| {skip.scenario} | {skip.broker} | skipped | | | | | | | | | | {skip.reason} |"
        )
    return "\n".join(lines)


LEGEND = """\
rate/s: accepted/s (acked; QoS 0: confirmed by PINGRESP) without subscribers, delivered/s
  with; idle-10k: connections accepted/s; burst: acked/s while the subscriber reads slowly.
vs X: X's rate / this broker's rate; latency scenarios: this p99 / X's p99 (> 1.00: X ahead).
lost, dup: summed over all repeats. CPU us/msg: broker CPU (user+system) per message
  (per delivery with subscribers; per connection for idle-10k; per published message for burst).
client: load generator CPU / wall time (near 100% means the client limits the rate).
p50/p99/p99.9: publish -> delivery with a subscriber, publish -> PUBACK "(ack)" without.
peak MiB: highest broker VmRSS sampled every 100 ms (RssAnon in the JSON; VmRSS counts
  LMDB's mapped file pages). KiB anon RSS/conn: broker RssAnon growth / connections held.
capped: a slow broker ran fewer messages (or connections) than the others."""


@attrs.frozen
class Skip:
    """A scenario a broker cannot run, and why."""

    scenario: str
    broker: str
    reason: str


def trickle_connections(peer: Peer, scenario: Scenario, *, quick: bool) -> int:
    """Publishing connections of a trickle run on ``peer`` (capped like idle connections)."""
    wanted = scenario.publisher_count(quick)
    if peer.connection_cap is None:
        return wanted
    return max(1, min(wanted, peer.connection_cap // (10 if quick else 1)))


def run_size(
    peer: Peer, scenario: Scenario, *, quick: bool, scale: float
) -> tuple[int, int | None]:
    """Messages per publisher (idle: connections) for ``peer``, and the uncapped
    count when the peer's cap lowered it."""
    wanted = max(1, round((scenario.quick_messages if quick else scenario.messages) * scale))
    divisor = 10 if quick else 1
    if scenario.kind == "idle":
        cap = None if peer.connection_cap is None else peer.connection_cap // divisor
    elif peer.work_cap is not None:
        publishers = (
            trickle_connections(peer, scenario, quick=quick)
            if scenario.kind == "trickle"
            else scenario.publishers
        )
        work = publishers * max(1, scenario.subscribers)
        cap = peer.work_cap // divisor // work
    else:
        cap = None
    if cap is not None:
        cap = max(1, cap)
    if cap is not None and cap < wanted:
        return cap, wanted
    return wanted, None


async def measure(
    peer: Peer, scenario: Scenario, *, level: int, quick: bool, scale: float
) -> ScenarioResult:
    """Start ``peer`` fresh, run ``scenario`` once, stop it; failures become errors."""
    count, capped_from = run_size(peer, scenario, quick=quick, scale=scale)
    connections = None
    if scenario.kind == "trickle":
        connections = trickle_connections(peer, scenario, quick=quick)
        if connections < scenario.publisher_count(quick) and capped_from is None:
            capped_from = count
    try:
        with tempfile.TemporaryDirectory(prefix=f"mqtt-bench-{peer.name}-") as tmp:
            async with peer.start(Path(tmp)) as running:
                target = Target(running.host, running.port, running.pid)
                result = await run_scenario(
                    target,
                    scenario,
                    broker=peer.name,
                    protocol_level=level,
                    quick=quick,
                    messages=count,
                    connections=connections,
                )
                if capped_from is not None:
                    result.capped_from = capped_from * scenario.publisher_count(quick)
                return result
    except Exception as exc:
        # LoadError, PeerError, OSError, or a bug in the load generator: recorded and
        # reported as a failed measurement (exit status 1); the rest of the suite still runs
        result = ScenarioResult(scenario.name, peer.name, level, 0)
        result.errors.append(f"{type(exc).__name__}: {exc}")
        return result


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPUs, memory, kernel, load, fd limit."""
    model = next(
        (
            line.partition(":")[2].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        (
            int(line.split()[1]) * 1024
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        None,
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_bytes": memory,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def _meta(
    args: argparse.Namespace,
    peers: list[Peer],
    repeat: int,
    repeat_heavy: int,
    argv: Sequence[str],
) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "protocol_level": args.protocol,
        "quick": args.quick,
        "repeat": repeat,
        "repeat_heavy": repeat_heavy,
        "concurrent": args.quick and not args.sequential and len(peers) > 1,
        "command": ["python", "-m", "bench.mqtt_compare", *argv],
        "machine": machine_info(),
        "brokers": {
            peer.name: {
                "version": peer.cached_version(),
                "about": peer.description,
                "protocol_levels": list(peer.protocol_levels),
                "max_qos": peer.max_qos,
                "work_cap": peer.work_cap,
                "connection_cap": peer.connection_cap,
            }
            for peer in peers
        },
        "scenarios": {
            name: {
                "description": SCENARIOS[name].description,
                "messages": round(
                    (SCENARIOS[name].quick_messages if args.quick else SCENARIOS[name].messages)
                    * args.scale
                ),
                "kind": SCENARIOS[name].kind,
                "figure": SCENARIOS[name].figure,
                "publishers": SCENARIOS[name].publisher_count(args.quick),
                "subscribers": SCENARIOS[name].subscribers,
                "payload_size": SCENARIOS[name].payload_size,
                "heavy": SCENARIOS[name].heavy,
            }
            for name in args.scenarios
        },
    }


def checkout_peers(checkout: Path, brokers: Sequence[str]) -> list[Peer]:
    """``--tidelog-checkout``: that checkout's tidelog beside each tidelog variant that runs."""
    peers: list[Peer] = []
    if "tidelog" in brokers or "tidelog-fsync-never" not in brokers:
        peers.append(Tidelog(checkout, name="tidelog-base"))
    if "tidelog-fsync-never" in brokers:
        peers.append(Tidelog(checkout, name="tidelog-base-fsync-never", fsync="never"))
    return peers


def parse_variant(text: str) -> Tidelog:
    """``--tidelog-variant NAME:fsync=never,broker.commit_linger=0.0005``: a tidelog peer."""
    name, _, spec = text.partition(":")
    if not name or name in PEERS:
        raise argparse.ArgumentTypeError(f"variant {text!r}: give it a new name before the ':'")
    fsync = "always"
    settings = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        key, equals, value = item.partition("=")
        if not equals:
            raise argparse.ArgumentTypeError(f"variant {text!r}: {item!r} is not KEY=VALUE")
        if key == "fsync":
            fsync = value
        else:
            settings.append(item)
    return Tidelog(name=name, fsync=fsync, settings=settings)


def skips(args: argparse.Namespace, peers: list[Peer]) -> list[Skip]:
    """The (scenario, broker) pairs the broker cannot run."""
    return [
        Skip(name, peer.name, reason)
        for name in args.scenarios
        for peer in peers
        if (reason := peer.cannot(level=args.protocol, qos=SCENARIOS[name].needs_qos))
    ]


async def run_all(
    args: argparse.Namespace,
    peers: list[Peer],
    repeat: int,
    emit: Callable[[str], None],
    *,
    repeat_heavy: int | None = None,
    skipped: Sequence[Skip] = (),
    concurrent: bool = False,
) -> list[tuple[int, ScenarioResult]]:
    """Every measurement, brokers interleaved within each repeat and scenario.

    ``concurrent``: each broker runs its measurements at the same time as the
    others' (a smoke run's wall time is then the slowest broker's, not the sum;
    its numbers mean nothing).
    """
    results: list[tuple[int, ScenarioResult]] = []
    heavy_runs = repeat if repeat_heavy is None else repeat_heavy
    cannot = {(skip.scenario, skip.broker) for skip in skipped}

    async def one(run: int, scenario: Scenario, peer: Peer) -> None:
        result = await measure(
            peer, scenario, level=args.protocol, quick=args.quick, scale=args.scale
        )
        results.append((run, result))
        runs = heavy_runs if scenario.heavy else repeat
        emit(f"[run {run + 1}/{runs}] {format_result(result)}")

    def plan(peer: Peer | None) -> list[tuple[int, Scenario, Peer]]:
        steps = []
        for run in range(max(repeat, heavy_runs)):
            for name in args.scenarios:
                scenario = SCENARIOS[name]
                if run >= (heavy_runs if scenario.heavy else repeat):
                    continue
                order = peers if run % 2 == 0 else peers[::-1]
                for each in order:
                    if (name, each.name) not in cannot and peer in (None, each):
                        steps.append((run, scenario, each))
        return steps

    async def in_turn(steps: list[tuple[int, Scenario, Peer]]) -> None:
        for run, scenario, peer in steps:
            await one(run, scenario, peer)

    if concurrent:
        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(in_turn, plan(peer))
    else:
        await in_turn(plan(None))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mqtt_compare",
        description="Run every MQTT scenario against every broker; print medians and ratios.",
    )
    parser.add_argument(
        "--brokers",
        type=lambda text: parse_names(text, list(PEERS), "broker"),
        default=DEFAULT_PEERS,
        help=f"comma-separated, of {','.join(PEERS)}; default {','.join(DEFAULT_PEERS)}",
    )
    parser.add_argument(
        "--scenarios",
        type=scenario_names,
        default=list(SCENARIOS),
        help=f"comma-separated; default all: {','.join(SCENARIOS)}",
    )
    parser.add_argument("--repeat", type=int, help="runs per measurement (default 3, quick 1)")
    parser.add_argument(
        "--repeat-heavy",
        type=int,
        help="runs of the heavy scenarios (idle-10k, burst); default 1",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: small counts, 1 repeat, brokers measured concurrently",
    )
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="with --quick: one measurement at a time, as full runs do",
    )
    parser.add_argument("--protocol", type=parse_protocol, default=4, help="3.1.1 (default) or 5")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply message counts")
    parser.add_argument("--baseline", default="tidelog", help="broker the others are compared with")
    parser.add_argument(
        "--tidelog-variant",
        type=parse_variant,
        action="append",
        default=[],
        metavar="NAME:SETTING,...",
        help="run this checkout's tidelog again as NAME with settings: fsync=never|always and "
        "SECTION.NAME=VALUE options, e.g. linger:broker.commit_linger=0.0005 (repeatable)",
    )
    parser.add_argument(
        "--tidelog-checkout",
        type=Path,
        help="another tidelog checkout (a git worktree of the code before a change) to run "
        "beside this one as tidelog-base (and tidelog-base-fsync-never when "
        "tidelog-fsync-never runs): a same-run A/B",
    )
    parser.add_argument("--json", type=Path, help="write every result and the summary here")
    parser.add_argument(
        "--markdown", action="store_true", help="print the summary as a Markdown table too"
    )
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(raw_argv)
    repeat = args.repeat or (1 if args.quick else 3)
    repeat_heavy = args.repeat_heavy or 1

    peers = [PEERS[name] for name in args.brokers]
    peers += args.tidelog_variant
    if args.tidelog_checkout:
        peers += checkout_peers(args.tidelog_checkout.resolve(), args.brokers)
    blocked = [(peer.name, reason) for peer in peers if (reason := peer.unavailable())]
    if blocked:
        for name, reason in blocked:
            print(f"mqtt_compare: cannot run {name}: {reason}", file=sys.stderr)
        return 2
    baseline = args.baseline if args.baseline in [peer.name for peer in peers] else None
    fd_limit = raise_fd_limit()
    skipped = skips(args, peers)
    concurrent = args.quick and not args.sequential and len(peers) > 1

    meta = _meta(args, peers, repeat, repeat_heavy, raw_argv)
    print(f"MQTT benchmark {meta['date']} on {meta['host']}, Python {meta['python']}")
    print(
        f"protocol level {args.protocol}, {repeat} run(s) per measurement "
        f"({repeat_heavy} for heavy scenarios), fd limit {fd_limit}"
    )
    for peer in peers:
        print(f"  {peer.name}: {peer.description} [{peer.cached_version()}]")
    for name, info in meta["scenarios"].items():
        print(f"  {name}: {info['description']}, {info['messages']:,} messages")
    for skip in skipped:
        print(f"  skipped: {skip.scenario} on {skip.broker}: {skip.reason}")
    if concurrent:
        print("  brokers measured concurrently (a smoke run: the numbers are not comparable)")
    probe_count = 200 if args.quick else 1000
    disk = {"directory": tempfile.gettempdir()}
    disk["before"] = describe(fdatasync_latency(count=probe_count))
    print(f"  disk ({disk['directory']}) before: {format_probe(disk['before'])}")
    print(flush=True)

    results = trio.run(
        functools.partial(
            run_all,
            args,
            peers,
            repeat,
            lambda line: print(line, flush=True),
            repeat_heavy=repeat_heavy,
            skipped=skipped,
            concurrent=concurrent,
        )
    )

    disk["after"] = describe(fdatasync_latency(count=probe_count))
    meta["disk_fdatasync"] = disk

    summaries: list[Summary] = []
    cannot = {(skip.scenario, skip.broker) for skip in skipped}
    for name in args.scenarios:
        by_broker = {
            peer.name: [r for _, r in results if r.scenario == name and r.broker == peer.name]
            for peer in peers
        }
        base = None
        if baseline and (name, baseline) not in cannot:
            base = summarize(by_broker[baseline], SCENARIOS[name], baseline, None)
        for peer in peers:
            if (name, peer.name) not in cannot:
                summaries.append(summarize(by_broker[peer.name], SCENARIOS[name], peer.name, base))

    print()
    print(format_table(summaries, baseline, skipped))
    print()
    for when in ("before", "after"):
        print(f"disk's own fdatasync ({when} the scenarios): {format_probe(disk[when])}")
    print()
    print(LEGEND)
    if args.markdown:
        print()
        print(format_markdown(summaries, baseline, skipped))
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
            "skipped": [attrs.asdict(skip) for skip in skipped],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
