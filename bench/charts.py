"""PNG charts of the benchmark suite's JSON, for docs/benchmarks.md.

    python -m bench.charts --mqtt bench/results/mqtt.json \\
        --tidelog-only bench/results/tidelog-only.json --out docs/images

Reads what ``python -m bench.mqtt_compare --json F`` writes (its ``summary``:
medians per scenario and broker) and what ``python -m bench.tidelog_only --json
F`` writes (its ``measurements``), and writes with matplotlib's Agg backend (no
display needed):

* ``mqtt-throughput.png``: every rate scenario, one bar per broker, the height
  the broker's rate relative to tidelog's (tidelog = 1.0; the first broker when
  tidelog did not run), each bar labelled with its absolute msg/s; lost or
  duplicated messages and failed runs are written in red on the bar;
* ``mqtt-latency.png``: fixed-rate scenarios, p50 / p99 / p99.9 per broker
  (publish -> delivery, log scale);
* ``mqtt-cpu.png``: broker CPU microseconds per message, per scenario and broker
  (log scale): the steadiest figure on a shared machine;
* ``mqtt-rss.png``: every summary field whose name contains ``rss`` (peak RSS,
  RSS per connection), when the JSON has any;
* ``tidelog-only.png``: replay (engine, storage, raw LMDB scan) and catch-up
  rates against their issue-7 targets.

Charts without data are skipped (and said so). Exit status 0 when every input
was read and at least one chart was written, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load_scenarios import SCENARIOS

BASELINE = "tidelog"
COLOURS = {
    "tidelog": "#1f77b4",
    "mosquitto": "#ff7f0e",
    "mosquitto-unlimited": "#ffbb78",
    "nats": "#2ca02c",
    "nats-server": "#2ca02c",
    "amqtt": "#9467bd",
}
FALLBACK_COLOURS = ["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#d62728"]
DPI = 110

Summary = dict[str, Any]


def human(value: float) -> str:
    """123456 -> '123k', 1234567 -> '1.23M'."""
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e4:
        return f"{value / 1e3:.0f}k"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    if value >= 10:
        return f"{value:.0f}"
    return f"{value:.2g}"


def colour(broker: str, brokers: Sequence[str]) -> str:
    if broker in COLOURS:
        return COLOURS[broker]
    others = [b for b in brokers if b not in COLOURS]
    return FALLBACK_COLOURS[others.index(broker) % len(FALLBACK_COLOURS)]


def is_fixed_rate(scenario: str) -> bool:
    """A latency scenario (fixed offered rate): its rate says nothing, its latency does."""
    known = SCENARIOS.get(scenario)
    if known is not None:
        return known.rate is not None
    return scenario.startswith("latency")


def failed(summary: Summary) -> bool:
    runs = summary.get("runs") or 0
    return bool(summary.get("skipped")) or (runs > 0 and (summary.get("failed_runs") or 0) >= runs)


def damage(summary: Summary) -> str:
    """'lost 555', 'dup 3', 'failed 1/3' ... for the bar's label, or ''."""
    parts = []
    if summary.get("lost"):
        parts.append(f"lost {summary['lost']:,}")
    if summary.get("duplicated"):
        parts.append(f"dup {summary['duplicated']:,}")
    if summary.get("skipped"):
        parts.append("skipped")
    elif summary.get("failed_runs"):
        parts.append(f"failed {summary['failed_runs']}/{summary.get('runs', '?')}")
    return "\n".join(parts)


def ordered(values: Sequence[str]) -> list[str]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))


def grouped_bars(
    ax: Axes,
    groups: Sequence[str],
    brokers: Sequence[str],
    value: Callable[[str, str], float | None],
    label: Callable[[str, str, float], str],
    note: Callable[[str, str], str] = lambda group, broker: "",
    *,
    log: bool = False,
) -> None:
    """One cluster of bars per group, one bar per broker; missing values leave a gap."""
    width = 0.8 / max(1, len(brokers))
    for b, broker in enumerate(brokers):
        xs, heights, labels, notes = [], [], [], []
        for g, group in enumerate(groups):
            v = value(group, broker)
            x = g - 0.4 + width * (b + 0.5)
            text = note(group, broker)
            if v is None or (log and v <= 0) or math.isnan(v):
                if text:
                    ax.text(x, 0, text, ha="center", va="bottom", color="red", fontsize=6,
                            rotation=90)  # fmt: skip
                continue
            xs.append(x)
            heights.append(v)
            labels.append(label(group, broker, v))
            notes.append(text)
        bars = ax.bar(xs, heights, width, label=broker, color=colour(broker, brokers))
        for bar, text, warn in zip(bars, labels, notes, strict=True):
            top = bar.get_height()
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, top),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=6,
                rotation=90 if len(brokers) > 3 else 0,
            )
            if warn:
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    top / 2 if not log else math.sqrt(top) if top > 1 else top,
                    warn,
                    ha="center",
                    va="center",
                    color="red",
                    fontsize=6,
                    fontweight="bold",
                    rotation=90,
                )
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def width(groups: Sequence[str], brokers: Sequence[str]) -> float:
    """Figure width in inches for ``groups`` clusters of ``brokers`` bars: readable, capped."""
    return max(7.0, min(16.0, 2.0 + 0.28 * len(groups) * max(1, len(brokers))))


def _title(meta: dict[str, Any]) -> str:
    bits = [meta.get("date", "")]
    if meta.get("protocol_level"):
        bits.append(f"MQTT {'5' if meta['protocol_level'] == 5 else '3.1.1'}")
    if meta.get("repeat"):
        bits.append(f"median of {meta['repeat']}")
    if meta.get("quick"):
        bits.append("QUICK (smoke run, not meaningful)")
    return ", ".join(b for b in bits if b)


def _save(fig: Any, path: Path, written: list[Path]) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    written.append(path)


def mqtt_charts(document: dict[str, Any], out: Path) -> tuple[list[Path], list[str]]:
    """The MQTT charts of one mqtt_compare JSON; (files written, charts skipped and why)."""
    summaries: list[Summary] = document.get("summary", [])
    meta: dict[str, Any] = document.get("meta", {})
    brokers = ordered([s["broker"] for s in summaries])
    scenarios = ordered([s["scenario"] for s in summaries])
    table = {(s["scenario"], s["broker"]): s for s in summaries}
    baseline = BASELINE if BASELINE in brokers else (brokers[0] if brokers else BASELINE)
    written: list[Path] = []
    skipped: list[str] = []
    subtitle = _title(meta)

    def get(scenario: str, broker: str) -> Summary | None:
        return table.get((scenario, broker))

    def note(scenario: str, broker: str) -> str:
        s = get(scenario, broker)
        return damage(s) if s else ""

    # throughput, relative to the baseline
    rated = [sc for sc in scenarios if not is_fixed_rate(sc)]
    if rated:

        def relative(scenario: str, broker: str) -> float | None:
            s, base = get(scenario, broker), get(scenario, baseline)
            if not s or not base or failed(s) or not s.get("rate") or not base.get("rate"):
                return None
            return float(s["rate"]) / float(base["rate"])

        def absolute(scenario: str, broker: str, _v: float) -> str:
            s = get(scenario, broker)
            return human(float(s["rate"])) if s else ""

        fig, ax = plt.subplots(figsize=(width(rated, brokers), 5.0))
        grouped_bars(ax, rated, brokers, relative, absolute, note, log=True)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: f"{value:g}x"))
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_ylabel(f"rate relative to {baseline} (= 1x; log)")
        ax.set_title(
            f"Throughput per scenario (labels: per second; idle-10k: connections)\n{subtitle}",
            fontsize=9,
        )
        ax.legend(fontsize=7, ncol=min(len(brokers), 5))
        _save(fig, out / "mqtt-throughput.png", written)
    else:
        skipped.append("mqtt-throughput.png: no rate scenario in the JSON")

    # latency at fixed rates
    fixed = [
        sc
        for sc in scenarios
        if is_fixed_rate(sc) and any((get(sc, b) or {}).get("p99_ms") for b in brokers)
    ]
    if fixed:
        fig, axes = plt.subplots(
            1, len(fixed), figsize=(4.0 + 3.0 * len(fixed), 4.5), squeeze=False
        )
        percentiles = [("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")]
        for ax, scenario in zip(axes[0], fixed, strict=True):

            def latency(group: str, broker: str, scenario: str = scenario) -> float | None:
                s = get(scenario, broker)
                key = dict((label, field) for field, label in percentiles)[group]
                value = s.get(key) if s and not failed(s) else None
                return float(value) if value else None

            grouped_bars(
                ax,
                [label for _, label in percentiles],
                brokers,
                latency,
                lambda g, b, v: f"{v:.2f}" if v < 10 else f"{v:.0f}",
                lambda g, b, scenario=scenario: note(scenario, b) if g == "p50" else "",
                log=True,
            )
            ax.set_title(scenario, fontsize=9)
            ax.set_ylabel("publish -> delivery, ms (log)")
            ax.axhline(1.0, color="green", linewidth=0.8, linestyle="--")
            ax.text(0.99, 1.0, "1 ms", transform=ax.get_yaxis_transform(), ha="right",
                    va="bottom", fontsize=7, color="green")  # fmt: skip
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"Latency at a fixed rate\n{subtitle}", fontsize=9)
        _save(fig, out / "mqtt-latency.png", written)
    else:
        skipped.append("mqtt-latency.png: no fixed-rate scenario with latencies in the JSON")

    # broker CPU per message
    with_cpu = [
        sc
        for sc in scenarios
        if any((get(sc, b) or {}).get("broker_cpu_us_per_msg") for b in brokers)
    ]
    if with_cpu:

        def cpu(scenario: str, broker: str) -> float | None:
            s = get(scenario, broker)
            value = s.get("broker_cpu_us_per_msg") if s and not failed(s) else None
            return float(value) if value else None

        fig, ax = plt.subplots(figsize=(width(with_cpu, brokers), 5.0))
        grouped_bars(ax, with_cpu, brokers, cpu, lambda g, b, v: f"{v:.1f}", log=True)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: human(value)))
        ax.set_ylabel("broker CPU us per message (log; lower is better)")
        ax.set_title(f"Broker CPU per message\n{subtitle}", fontsize=9)
        ax.legend(fontsize=7, ncol=min(len(brokers), 5))
        _save(fig, out / "mqtt-cpu.png", written)
    else:
        skipped.append("mqtt-cpu.png: no broker CPU figures in the JSON")

    # RSS: whatever rss fields the summaries carry
    rss_fields = ordered(
        [
            key
            for s in summaries
            for key, value in s.items()
            if "rss" in key.lower() and isinstance(value, int | float) and value
        ]
    )
    if rss_fields:
        fig, axes = plt.subplots(
            len(rss_fields),
            1,
            figsize=(width(scenarios, brokers), 1.0 + 3.5 * len(rss_fields)),
            squeeze=False,
        )
        for (ax,), field in zip(axes, rss_fields, strict=True):
            groups = [sc for sc in scenarios if any((get(sc, b) or {}).get(field) for b in brokers)]

            def rss(scenario: str, broker: str, field: str = field) -> float | None:
                s = get(scenario, broker)
                value = s.get(field) if s else None
                return float(value) if value else None

            grouped_bars(ax, groups, brokers, rss, lambda g, b, v: human(v), log=True)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: human(value)))
            ax.set_ylabel(f"{field} (log)", fontsize=8)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"Broker memory\n{subtitle}", fontsize=9)
        _save(fig, out / "mqtt-rss.png", written)
    else:
        skipped.append("mqtt-rss.png: no RSS fields in the JSON summary")
    return written, skipped


def tidelog_only_chart(document: dict[str, Any], out: Path) -> tuple[list[Path], list[str]]:
    """Replay and catch-up rates against their targets; (files written, skipped)."""
    measurements: list[dict[str, Any]] = document.get("measurements", [])
    if not measurements:
        return [], ["tidelog-only.png: no measurements in the JSON"]
    meta = document.get("meta", {})
    groups = [
        (
            "events/s",
            "Replay: 1 pass over the log",
            [m for m in measurements if m["unit"] == "events/s"],
        ),
        (
            "msg/s",
            "Persistent-session catch-up",
            [m for m in measurements if m["unit"] != "events/s"],
        ),
    ]
    groups = [g for g in groups if g[2]]
    fig, axes = plt.subplots(
        1, len(groups), figsize=(3.5 + 3.0 * sum(len(g[2]) for g in groups) / 2, 4.5), squeeze=False
    )
    for ax, (unit, title, items) in zip(axes[0], groups, strict=True):
        names = [m["name"] for m in items]
        rates = [float(m["rate"]) for m in items]
        colours = ["#d62728" if m.get("errors") else COLOURS["tidelog"] for m in items]
        bars = ax.bar(range(len(items)), rates, 0.6, color=colours)
        for bar, m in zip(bars, items, strict=True):
            text = human(float(m["rate"]))
            if m.get("broker_cpu_us_per_msg"):
                per = "event" if unit == "events/s" else "msg"
                text += f"\n{m['broker_cpu_us_per_msg']:.2f} us CPU/{per}"
            if m.get("lost") or m.get("duplicated"):
                text += f"\nlost {m.get('lost', 0)} dup {m.get('duplicated', 0)}"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )
        targets = {float(m["target"]) for m in items if m.get("target")}
        for target in targets:
            ax.axhline(target, color="green", linestyle="--", linewidth=1)
            ax.text(
                0.99,
                target,
                f"target {human(target)}",
                transform=ax.get_yaxis_transform(),
                ha="right",
                va="bottom",
                fontsize=7,
                color="green",
            )
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _position: human(value)))
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels(names, rotation=15, ha="right", fontsize=8)
        ax.set_ylabel(unit)
        top = max([*rates, *targets, 1.0])
        ax.set_ylim(0, top * 1.25)
        count = items[0].get("count", 0)
        ax.set_title(f"{title} ({count:,})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    fig.suptitle(f"tidelog only, LMDB fsync=always\n{_title(meta)}", fontsize=9)
    written: list[Path] = []
    _save(fig, out / "tidelog-only.png", written)
    return written, []


def render(mqtt: Path | None, tidelog_only: Path | None, out: Path) -> tuple[list[Path], list[str]]:
    """Write every chart the given JSON files allow into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    skipped: list[str] = []
    for path, make in ((mqtt, mqtt_charts), (tidelog_only, tidelog_only_chart)):
        if path is None:
            continue
        files, reasons = make(json.loads(path.read_text()), out)
        written += files
        skipped += reasons
    return written, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.charts",
        description="PNG charts of bench.mqtt_compare and bench.tidelog_only JSON results.",
    )
    parser.add_argument("--mqtt", type=Path, help="JSON of python -m bench.mqtt_compare --json")
    parser.add_argument(
        "--tidelog-only", type=Path, help="JSON of python -m bench.tidelog_only --json"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="PNG directory")
    args = parser.parse_args(argv)
    if args.mqtt is None and args.tidelog_only is None:
        parser.error("give --mqtt and/or --tidelog-only")
    try:
        written, skipped = render(args.mqtt, args.tidelog_only, args.out)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"charts: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for reason in skipped:
        print(f"charts: skipped {reason}")
    for path in written:
        print(f"wrote {path}")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
