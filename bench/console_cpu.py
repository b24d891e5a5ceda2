"""What an open web console costs the broker: its CPU with and without the console.

    python bench/console_cpu.py                 # 20 s per phase
    python bench/console_cpu.py --seconds 10 --rate 2000

A real ``tidelog serve`` (LMDB in a temp dir, fsync ``never`` so the disk does not
dominate) runs in its own process; this process drives Debian's chromium through
Playwright and, for the busy phases, publishes ``--rate`` events per second over
REST (batches of 100). The broker's CPU is read from ``/proc/<pid>/stat`` (user +
system time) over each phase, so chromium's own CPU is not counted in it. Phases,
alternated so drift hits both sides alike:

* idle: nothing, then the console open on the Overview (its SSE stream ticks
  every second);
* busy: the publisher alone, then the publisher with the console on a live tail
  of ``#`` (every event goes to the browser) on the Topics page.

Reported: the broker's CPU in % of one core per phase and the differences (the
console's cost), and for the busy phases the events published in each and the
broker's CPU per 1,000 of them (on a loaded machine the publisher may fall short
of ``--rate`` while chromium runs: compare the per-event figures then).
Target (CONTRACTS, "Console"): <= 5 % of a core at idle.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_server(data: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tidelog", "serve", "--storage", f"lmdb://{data}?fsync=never",
         "--mqtt-port", "0", "--ws-port", "off", "--http-port", "0"],
        cwd=data.parent,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:
        match = re.search(r"HTTP listening on [^\s]+:(\d+)", line)
        if match:
            threading.Thread(target=lambda: [*process.stderr], daemon=True).start()  # type: ignore[union-attr]
            return process, f"http://127.0.0.1:{match.group(1)}"
    raise RuntimeError("tidelog serve did not start")


class Publisher:
    """``rate`` events per second over REST, batches of 100, until stopped."""

    def __init__(self, base: str, rate: int) -> None:
        self.base = base
        self.rate = rate
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        payload = base64.b64encode(json.dumps({"celsius": 21.5, "ok": True}).encode()).decode()
        batch = 100
        body = {"events": [{"topic": f"load/{n % 10}/temp", "payload": payload}
                           for n in range(batch)]}  # fmt: skip
        interval = batch / self.rate
        with httpx.Client(base_url=self.base, timeout=10) as http:
            deadline = time.monotonic()
            while not self._stop.is_set():
                http.post("/v1/events", json=body).raise_for_status()
                self.sent += batch
                deadline += interval
                time.sleep(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(pid: int, seconds: float) -> float:
    """The process's CPU over ``seconds``, in % of one core."""
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--rate", type=int, default=1000, help="events/s in the busy phases")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process, base = start_server(Path(tmp) / "data")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
                )
                results = run(browser, process.pid, base, args.seconds, args.rate)
                browser.close()
        finally:
            process.terminate()
            process.wait(30)
    print(json.dumps(results, indent=2))


def open_console(browser: object, base: str, route: str) -> Page:
    page: Page = browser.new_page()  # type: ignore[attr-defined]
    page.goto(f"{base}/#/{route}")
    return page


def run(browser: object, pid: int, base: str, seconds: float, rate: int) -> dict[str, object]:
    time.sleep(2)  # the server's start-up work is done
    idle = measure(pid, seconds)
    page = open_console(browser, base, "overview")
    page.wait_for_selector("#overview-status[data-ticks]")
    idle_console = measure(pid, seconds)
    page.close()
    idle_after = measure(pid, seconds)
    counts: list[int] = []

    def phase(publisher: Publisher) -> float:
        sent = publisher.sent
        cpu = measure(pid, seconds)
        counts.append(publisher.sent - sent)
        return cpu

    with Publisher(base, rate) as publisher:
        time.sleep(2)
        busy = phase(publisher)
        page = open_console(browser, base, "topics?filter=%23")
        page.wait_for_selector("#events tr.event", state="attached")
        busy_console = phase(publisher)
        shown = page.locator("#events tr.event").count()
        page.close()
        busy_after = phase(publisher)
        sent = publisher.sent
    idle_base = (idle + idle_after) / 2
    busy_base = (busy + busy_after) / 2
    return {
        "seconds_per_phase": seconds,
        "rate_events_per_s": rate,
        "events_published": sent,
        "rows_in_the_tail_at_end": shown,
        "idle_cpu_percent": {"without": round(idle_base, 2),
                             "overview_open": round(idle_console, 2),
                             "cost": round(idle_console - idle_base, 2),
                             "phases": [round(idle, 2), round(idle_console, 2),
                                        round(idle_after, 2)]},
        "busy_cpu_percent": {"without": round(busy_base, 2),
                             "live_tail_open": round(busy_console, 2),
                             "cost": round(busy_console - busy_base, 2),
                             "ratio": round(busy_console / busy_base, 3) if busy_base else None,
                             "phases": [round(busy, 2), round(busy_console, 2),
                                        round(busy_after, 2)],
                             "events_per_phase": counts,
                             "cpu_ms_per_1000_events": [
                                 round(10 * cpu * seconds / max(n, 1) * 1000, 2)
                                 for cpu, n in zip((busy, busy_console, busy_after), counts,
                                                   strict=True)]},
    }  # fmt: skip


if __name__ == "__main__":
    main()
