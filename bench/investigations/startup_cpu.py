"""The CPU a broker spends just after its MQTT port opens, idle (issue 19).

    python -m bench.investigations.startup_cpu main=/tmp/tree-468675b,s19=. --rounds 2

Starts ``tidelog serve`` from each tree (as ``bench.investigations.same_run``
does), waits until the port accepts, and reads the process's CPU time from
``/proc/PID/stat`` then again ``--seconds`` later, with its VmRSS and RssAnon.
Work a server does after its listeners open lands inside any benchmark that
starts measuring once the port accepts; an idle broker should spend ~0 here.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.investigations.same_run import start


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and RssAnon of a process, KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon"):
            out[key] = int(value.split()[0])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.investigations.startup_cpu")
    parser.add_argument("trees", help="name=tree,...")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--port", type=int, default=22400)
    args = parser.parse_args(argv)
    port = args.port
    for _ in range(args.rounds):
        for name, tree in (item.split("=", 1) for item in args.trees.split(",")):
            port += 1
            with tempfile.TemporaryDirectory(prefix="tidelog-startup-") as tmp:
                process = start(name, tree, port, Path(tmp))
                try:
                    at_accept = cpu_seconds(process.pid)
                    time.sleep(args.seconds)
                    after = cpu_seconds(process.pid)
                    memory = memory_kib(process.pid)
                finally:
                    process.terminate()
                    process.wait(30)
            print(
                f"{name:12} CPU in the {args.seconds:g} s after the port accepts: "
                f"{1000 * (after - at_accept):4.0f} ms (before it: {1000 * at_accept:.0f} ms); "
                f"VmRSS {memory.get('VmRSS', 0) / 1024:.1f} MiB, "
                f"RssAnon {memory.get('RssAnon', 0) / 1024:.1f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
