"""The disk's own fdatasync latency: the floor under every ``fsync=always`` commit.

    python -m bench.disk_probe                 # in the temp directory the brokers use
    python -m bench.disk_probe --dir /var/lib/tidelog --count 2000

Writes one 4 KiB page and calls ``os.fdatasync`` ``count`` times (or until
``max_seconds`` pass) in a scratch file, the pages at successive offsets of a
preallocated file as an LMDB commit writes its pages, and reports the
percentiles of the fdatasync calls alone. An LMDB commit under
``fsync=always`` syncs twice (data pages, then the meta page), so its floor is
about two of these. ``bench.mqtt_compare`` runs this probe before and after its
scenarios, in the same directory as the brokers' logs, and reports both
beside the latency figures (issue 12: fsync ``always`` p99 within 2x of the
disk's own fdatasync p99 measured in the same run).

:func:`lmdb_commit_latency` times whole LMDB write transactions of one small
record each (``sync=True``, as a log segment under ``fsync=always`` opens its
environment): what the disk alone imposes on every durable append, with no
broker around it. ``bench.mesh`` reports it beside its latency figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load_results import Latency

PAGE = 4096
FILE_PAGES = 256
"""The scratch file's size in pages; writes wrap around it."""


def fdatasync_latency(
    directory: Path | str | None = None, *, count: int = 1000, max_seconds: float = 3.0
) -> Latency | None:
    """Percentiles of ``count`` page-write + fdatasync rounds (fdatasync timed alone)."""
    samples: list[int] = []
    page = os.urandom(PAGE)
    with tempfile.TemporaryDirectory(prefix="disk-probe-", dir=directory) as tmp:
        path = Path(tmp) / "probe"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, bytes(PAGE * FILE_PAGES), 0)
            os.fsync(fd)
            deadline = time.monotonic() + max_seconds
            for i in range(count):
                os.pwrite(fd, page, (i % FILE_PAGES) * PAGE)
                started = time.perf_counter_ns()
                os.fdatasync(fd)
                samples.append(time.perf_counter_ns() - started)
                if time.monotonic() > deadline:
                    break
        finally:
            os.close(fd)
    return Latency.from_samples(samples)


LMDB_PROBE_RECORD_BYTES = 100
"""A record about the size of a small MQTT event (topic, payload, header)."""


def lmdb_commit_latency(
    directory: Path | str | None = None, *, count: int = 500, max_seconds: float = 3.0
) -> Latency | None:
    """Percentiles of ``count`` LMDB commits of one small record each, each synced
    (data pages, then the meta page) before it returns."""
    import lmdb

    samples: list[int] = []
    record = os.urandom(LMDB_PROBE_RECORD_BYTES)
    with tempfile.TemporaryDirectory(prefix="lmdb-probe-", dir=directory) as tmp:
        env = lmdb.open(tmp, map_size=64 * 1024 * 1024, sync=True, metasync=True)
        try:
            deadline = time.monotonic() + max_seconds
            for i in range(count):
                started = time.perf_counter_ns()
                with env.begin(write=True) as txn:
                    txn.put(i.to_bytes(8, "big"), record)
                samples.append(time.perf_counter_ns() - started)
                if time.monotonic() > deadline:
                    break
        finally:
            env.close()
    return Latency.from_samples(samples)


def describe(latency: Latency | None) -> dict[str, Any]:
    """The probe as JSON: count and p50/p99/p99.9/max in milliseconds."""
    if latency is None:
        return {"count": 0}
    return {
        "count": latency.count,
        "p50_ms": latency.p50_ns / 1e6,
        "p99_ms": latency.p99_ns / 1e6,
        "p999_ms": latency.p999_ns / 1e6,
        "max_ms": latency.max_ns / 1e6,
    }


def format_probe(info: dict[str, Any], what: str = "fdatasync") -> str:
    if not info.get("count"):
        return "no samples"
    return (
        f"{what} p50 {info['p50_ms']:.3f} ms, p99 {info['p99_ms']:.3f} ms, "
        f"p99.9 {info['p999_ms']:.3f} ms ({info['count']} calls)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.disk_probe", description=__doc__)
    parser.add_argument("--dir", type=Path, help="where to probe (default: the temp directory)")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    directory = args.dir or Path(tempfile.gettempdir())
    info = describe(fdatasync_latency(directory, count=args.count, max_seconds=args.max_seconds))
    print(f"{directory}: {format_probe(info)}")
    lmdb_info = describe(lmdb_commit_latency(directory, max_seconds=args.max_seconds))
    print(f"{directory}: {format_probe(lmdb_info, 'LMDB commit of one small record')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
