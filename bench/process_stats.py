"""What a broker process costs, from /proc: CPU seconds of a process and its
children (:func:`process_cpu_seconds`), resident memory (:func:`rss_status`,
sampled during a run by :class:`RssSampler`); and the runner's own file
descriptor limit raised for many connections (:func:`raise_fd_limit`)."""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

import trio

from bench.load_results import ScenarioResult

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None  # the process is gone
    return text[text.rindex(")") + 2 :].split()


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all threads), its live descendants and
    its reaped children, from /proc/<pid>/stat; None where /proc is missing."""
    if not Path("/proc/self/stat").exists():
        return None
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    ticks = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        fields = _stat_fields(current)
        if fields is None:
            continue
        # fields[11..14]: utime, stime, cutime, cstime (stat fields 14-17)
        ticks += sum(int(value) for value in fields[11:15])
        todo.extend(children.get(current, ()))
    return ticks / _CLOCK_TICKS


def cpu_times(pid: int) -> tuple[float, float] | None:
    """User and system CPU seconds of ``pid`` (all its threads, not its children);
    None where /proc is missing or the process is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return int(fields[11]) / _CLOCK_TICKS, int(fields[12]) / _CLOCK_TICKS


def rss_status(pid: int) -> tuple[int, int] | None:
    """(VmRSS, RssAnon) of ``pid`` in bytes from /proc/<pid>/status; None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            values[key] = int(rest.split()[0]) * 1024
    if len(values) < 2:
        return None
    return values["VmRSS"], values["RssAnon"]


class RssSampler:
    """Broker memory: the first sample, and the peaks of samples taken every ``interval`` s."""

    def __init__(self, pid: int | None, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.start: tuple[int, int] | None = None
        self.peak_rss = 0
        self.peak_anon = 0
        self.sample()

    def sample(self) -> tuple[int, int] | None:
        if self.pid is None:
            return None
        now = rss_status(self.pid)
        if now is not None:
            if self.start is None:
                self.start = now
            self.peak_rss = max(self.peak_rss, now[0])
            self.peak_anon = max(self.peak_anon, now[1])
        return now

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            await trio.sleep(self.interval)
            self.sample()

    def record(self, result: ScenarioResult) -> None:
        """Take a last sample and write start and peaks into ``result``."""
        self.sample()
        if self.start is not None:
            result.rss_start_bytes, result.rss_anon_start_bytes = self.start
            result.peak_rss_bytes = self.peak_rss
            result.peak_rss_anon_bytes = self.peak_anon


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit (for many connections); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1_048_576)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return hard
    return soft


ThreadStats = dict[str, tuple[int, int, int]]
"""Per thread id: nanoseconds on a CPU, nanoseconds runnable but waiting for one, and
times put on a CPU (``/proc/<pid>/task/<tid>/schedstat``)."""


def scheduler_seconds(pid: int) -> ThreadStats | None:
    """A snapshot of every thread of ``pid``'s scheduling (:data:`ThreadStats`); None
    where unreadable. Compare two with :func:`scheduler_delta`. The waiting is what a
    loaded machine adds to a process's latency."""
    threads: ThreadStats = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            fields = (task / "schedstat").read_text().split()
        except OSError:
            continue  # the thread ended
        threads[task.name] = (int(fields[0]), int(fields[1]), int(fields[2]))
    return threads


def scheduler_delta(before: ThreadStats, after: ThreadStats) -> tuple[float, float, int]:
    """Seconds running, seconds waiting for a CPU and times put on one between two
    snapshots, per thread: a thread started in between counts from zero, one that
    ended in between drops out of both (its share of the span is not counted, and its
    whole life is not subtracted)."""
    running = waiting = slices = 0
    for tid, (run, wait, count) in after.items():
        run0, wait0, count0 = before.get(tid, (0, 0, 0))
        running += run - run0
        waiting += wait - wait0
        slices += count - count0
    return running / 1e9, waiting / 1e9, slices
