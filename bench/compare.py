"""The whole benchmark suite of issue 7 in one command: MQTT side by side, tidelog-only, charts.

    python -m bench.compare                        # every available broker, full counts
    python -m bench.compare --quick --out /tmp/b   # smoke run (CI): small counts, 1 repeat
    python -m bench.compare --out bench/results --images docs/images   # refresh the docs

Runs, each as its own Python process from this checkout:

1. ``python -m bench.mqtt_compare --json OUT/mqtt.json --markdown``: every MQTT
   scenario against every broker that can run here (``--brokers`` to choose;
   brokers that cannot run are listed with the reason and left out);
2. ``python -m bench.tidelog_only --json OUT/tidelog-only.json``: replay
   throughput and persistent-session catch-up;
3. ``python -m bench.charts``: PNGs of both into ``--images`` (default OUT).

and writes ``OUT/results.md``: both tables in Markdown (the MQTT one as
mqtt_compare prints it) with the command and the date, ready for
docs/benchmarks.md. Every step runs even if an earlier one failed. Exit status
0 when every step succeeded, 1 when a measurement failed (or lost or duplicated
messages in the tidelog-only runs), 2 when no MQTT broker
can run here. Numbers never change the exit status.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.brokers import DEFAULT_PEERS, PEERS, REPO
from bench.mqtt_load import parse_names, parse_protocol, scenario_names


def available_brokers(requested: list[str] | None) -> tuple[list[str], list[tuple[str, str]]]:
    """(brokers that can run, [(broker, why not)]) among ``requested`` (default all)."""
    names = requested or DEFAULT_PEERS
    usable, missing = [], []
    for name in names:
        reason = PEERS[name].unavailable()
        if reason:
            missing.append((name, reason))
        else:
            usable.append(name)
    return usable, missing


def step(title: str, argv: list[str]) -> tuple[int, list[str]]:
    """Run one step as a child process with this interpreter, echoing its output as it
    comes; (exit status, output lines)."""
    print(f"\n=== {title}: {shlex.join(['python', *argv[1:]])}", flush=True)
    lines: list[str] = []
    with subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
    return child.returncode, lines


def markdown_table(lines: list[str]) -> str:
    """The last Markdown table in a step's output (mqtt_compare --markdown prints one)."""
    tables: list[list[str]] = []
    previous = False
    for line in lines:
        is_row = line.startswith("|")
        if is_row and not previous:
            tables.append([])
        if is_row:
            tables[-1].append(line)
        previous = is_row
    return "\n".join(tables[-1]) if tables else "(no table: see the JSON)"


def tidelog_only_markdown(path: Path) -> str:
    document = json.loads(path.read_text())
    lines = [
        "| measurement | rate | count | lost | dup | CPU us/msg | broker CPU | client CPU "
        "| target | met |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for m in document["measurements"]:
        cpu = m.get("broker_cpu_us_per_msg")
        client = m.get("client_cpu_share")
        broker = m.get("broker_cpu_share")
        target = m.get("target")
        met = {None: "-", True: "met", False: "**not met**"}[m.get("target_met")]
        lost = f"**{m['lost']}**" if m["lost"] else "0"
        dup = f"**{m['duplicated']}**" if m["duplicated"] else "0"
        lines.append(
            f"| {m['name']} | {m['rate']:,.0f} {m['unit']} | {m['count']:,} | {lost} | {dup} "
            f"| {'-' if cpu is None else f'{cpu:.2f}'} "
            f"| {'-' if broker is None else f'{broker:.0%}'} "
            f"| {'-' if client is None else f'{client:.0%}'} "
            f"| {'-' if target is None else f'{target:,.0f}'} | {met} |"
        )
    return "\n".join(lines)


def write_results(out: Path, command: str, mqtt: Path, mqtt_table: str, only: Path) -> Path:
    """``out/results.md``: both tables with their dates, for docs/benchmarks.md."""
    parts = [f"Command: `{command}`", ""]
    for path, title, render in (
        (mqtt, "MQTT", lambda _path: mqtt_table),
        (only, "tidelog only", tidelog_only_markdown),
    ):
        if not path.exists():
            continue
        meta: dict[str, Any] = json.loads(path.read_text()).get("meta", {})
        parts += [
            f"## {title}",
            "",
            f"{meta.get('date', '?')} on {meta.get('host', '?')}, Python {meta.get('python', '?')}"
            f"{', QUICK (smoke run)' if meta.get('quick') else ''}",
            "",
            render(path),
            "",
        ]
    results = out / "results.md"
    results.write_text("\n".join(parts))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare",
        description="The whole benchmark suite: MQTT side by side, tidelog-only, charts.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small counts, 1 repeat")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results", help="JSON and results.md here"
    )
    parser.add_argument("--images", type=Path, help="PNG directory (default: --out)")
    parser.add_argument(
        "--brokers",
        type=lambda text: parse_names(text, list(PEERS), "broker"),
        help=f"comma-separated, of {','.join(PEERS)}; default every one of "
        f"{','.join(DEFAULT_PEERS)} that can run here",
    )
    parser.add_argument(
        "--scenarios", type=scenario_names, help="MQTT scenarios (default all), comma-separated"
    )
    parser.add_argument("--repeat", type=int, help="runs per measurement (default 3, quick 1)")
    parser.add_argument("--protocol", type=parse_protocol, default=4, help="3.1.1 (default) or 5")
    parser.add_argument("--scale", type=float, help="multiply the MQTT message counts")
    parser.add_argument("--events", type=int, help="replay log size (1M; quick 50k)")
    parser.add_argument("--messages", type=int, help="offline messages to catch up (1M; quick 20k)")
    parser.add_argument(
        "--skip", choices=["mqtt", "tidelog-only"], action="append", default=[], help="skip a part"
    )
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    images: Path = (args.images or args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    common = ["--quick"] if args.quick else []
    if args.repeat:
        common += ["--repeat", str(args.repeat)]
    level = ["--protocol", "5"] if args.protocol == 5 else []
    status = 0
    mqtt_table = "(not run)"
    mqtt_json, only_json = out / "mqtt.json", out / "tidelog-only.json"
    for stale in (mqtt_json, only_json):
        stale.unlink(missing_ok=True)

    if "mqtt" not in args.skip:
        brokers, missing = available_brokers(args.brokers)
        for name, reason in missing:
            print(f"compare: leaving out {name}: {reason}", flush=True)
        if not brokers:
            print("compare: no MQTT broker can run here", file=sys.stderr)
            status = 2
        else:
            cmd = [python, "-m", "bench.mqtt_compare", *common, *level, "--markdown"]
            cmd += ["--brokers", ",".join(brokers), "--json", str(mqtt_json)]
            if args.scenarios:
                cmd += ["--scenarios", ",".join(args.scenarios)]
            if args.scale:
                cmd += ["--scale", str(args.scale)]
            code, lines = step("MQTT side by side", cmd)
            mqtt_table = markdown_table(lines)
            if code != 0:
                status = max(status, 1)

    if "tidelog-only" not in args.skip:
        cmd = [python, "-m", "bench.tidelog_only", *common, *level, "--json", str(only_json)]
        if args.events:
            cmd += ["--events", str(args.events)]
        if args.messages:
            cmd += ["--messages", str(args.messages)]
        if step("tidelog only", cmd)[0] != 0:
            status = max(status, 1)

    inputs = []
    if mqtt_json.exists():
        inputs += ["--mqtt", str(mqtt_json)]
    if only_json.exists():
        inputs += ["--tidelog-only", str(only_json)]
    if inputs:
        charts = [python, "-m", "bench.charts", *inputs, "--out", str(images)]
        if step("charts", charts)[0] != 0:
            status = max(status, 1)
    elif status == 0:
        status = 1

    command = shlex.join(
        ["python", "-m", "bench.compare", *(sys.argv[1:] if argv is None else argv)]
    )
    results = write_results(out, command, mqtt_json, mqtt_table, only_json)
    print("\n=== done")
    for path in (mqtt_json, only_json, results):
        if path.exists():
            print(f"  {path}")
    for png in sorted(images.glob("*.png")):
        print(f"  {png}")
    print("exit status", status, "(0: every measurement ran)" if status == 0 else "(FAILED)")
    return status


if __name__ == "__main__":
    sys.exit(main())
