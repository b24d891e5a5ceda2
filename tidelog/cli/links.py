"""``tidelog links``: the mesh links of a running server (``GET /v1/links``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tidelog.cli.common import Rest, add_parser, add_target

COLUMNS = ("name", "direction", "state", "peer", "lag", "events_in", "events_out", "gaps")


def _links(args: argparse.Namespace) -> int:
    body = Rest.from_args(args).get("/v1/links")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(f"node {body.get('node')} (incarnation {body.get('incarnation')})")
    rows = [
        [str(link.get(c) if link.get(c) is not None else "-") for c in COLUMNS]
        for link in body.get("links", [])
    ]
    if not rows:
        print("no links")
        return 0
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    for link in body.get("links", []):
        if link.get("last_error") and link.get("state") != "connected":
            print(f"{link['name']}: {link['last_error']}")
    return 0


def register(commands: Any) -> None:
    links = add_parser(
        commands,
        "links",
        "list the server's mesh links: state, lag and counters",
        "tidelog links\ntidelog links --json --url http://10.0.0.5:8080",
    )
    links.add_argument("--json", action="store_true", help="print JSON")
    add_target(links, local=False)
    links.set_defaults(func=_links)
