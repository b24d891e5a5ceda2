"""``tidelog cluster``: the nodes serving the server's log (``GET /v1/cluster``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tidelog.cli.common import Rest, add_parser, add_target


def _cluster(args: argparse.Namespace) -> int:
    answer = Rest.from_args(args).get("/v1/cluster")
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0
    print(f"log head {answer['head']}; this node {answer['node']}")
    rows = [("NODE", "ALIVE", "BEHIND", "CONNECTIONS", "LISTENERS")]
    for node in answer["nodes"]:
        connections = sum(node.get("connections", {}).values())
        listeners = " ".join(f"{k}:{v}" for k, v in sorted(node.get("listeners", {}).items()))
        alive = "yes" if node["alive"] else "no"
        rows.append((node["id"], alive, str(node["behind"]), str(connections), listeners))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)))
    return 0


def register(commands: Any) -> None:
    cluster = add_parser(
        commands,
        "cluster",
        "list the nodes serving the server's log: id, liveness, lag, connections, listeners",
        "tidelog cluster\ntidelog cluster --json --url http://10.0.0.5:8080",
    )
    cluster.add_argument("--json", action="store_true", help="print JSON")
    add_target(cluster, local=False)
    cluster.set_defaults(func=_cluster)
