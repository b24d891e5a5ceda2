"""``tidelog links [list|show|add|remove]``: the mesh links of a running server over
REST (``GET /v1/links``; adding and removing need ``security.admin_users``;
docs/mesh.md)."""

from __future__ import annotations

import argparse
import json
import urllib.parse
from typing import Any

from tidelog.cli.common import Rest, add_parser, add_target

COLUMNS = ("name", "direction", "state", "peer", "lag", "events_in", "events_out", "gaps")


def _path(name: str) -> str:
    return "/v1/links/" + urllib.parse.quote(name, safe="")


def _body(args: argparse.Namespace) -> dict[str, Any]:
    """The ``[[link]]`` keys given on the command line (the server checks them)."""
    body: dict[str, Any] = {"url": args.remote_url, "pull": args.pull, "push": args.push}
    for key in (
        "mode",
        "username",
        "password",
        "local_prefix",
        "remote_prefix",
        "tls_ca",
        "tls_cert",
        "tls_key",
        "tls_server_name",
        "bridge",
        "hop_limit",
        "batch_events",
        "window",
        "heartbeat_seconds",
        "reconnect_seconds",
    ):
        value = getattr(args, key)
        if value is not None:
            body[key] = value
    if args.interest:
        body["interest"] = True
    if args.push_interest:
        body["push_interest"] = True
    return body


def _links(args: argparse.Namespace) -> int:
    rest = Rest.from_args(args)
    action = getattr(args, "action", None) or "list"
    if action == "add":
        result = rest.call("PUT", _path(args.name), body=_body(args))
        print(json.dumps(result, indent=2))
        return 0
    if action == "remove":
        rest.call("DELETE", _path(args.name))
        print(f"removed link {args.name}")
        return 0
    if action == "show":
        print(json.dumps(rest.call("GET", _path(args.name)), indent=2))
        return 0
    body = rest.get("/v1/links")
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
        "list, show, add or remove the server's mesh links (state, lag and counters)",
        "tidelog links\n"
        "tidelog links --json --url http://10.0.0.5:8080\n"
        "tidelog links add core --remote-url mqtt://10.0.0.9:1883 --push 'telemetry/#'\n"
        "tidelog links remove core",
    )
    links.add_argument("--json", action="store_true", help="print JSON")
    add_target(links, local=False)
    links.set_defaults(func=_links)
    actions = links.add_subparsers(dest="action", required=False, metavar="ACTION")
    listing = add_parser(actions, "list", "list the links (the default)", "tidelog links list")
    listing.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
    )
    show = add_parser(actions, "show", "show one outbound link", "tidelog links show core")
    add = add_parser(
        actions,
        "add",
        "create or replace a link at run time (admin_users; persisted)",
        "tidelog links add core --remote-url mqtt://127.0.0.1:21883 --mode transit "
        "--push 'telemetry/#' --pull 'commands/edge-1/#'",
    )
    remove = add_parser(
        actions, "remove", "delete a link created at run time", "tidelog links remove core"
    )
    for parser in (show, add, remove):
        parser.add_argument("name", metavar="NAME")
    add.add_argument(
        "--remote-url", required=True, metavar="URL", help="the remote: mqtt://host:port"
    )
    add.add_argument("--pull", action="append", default=[], metavar="FILTER", help="repeatable")
    add.add_argument("--push", action="append", default=[], metavar="FILTER", help="repeatable")
    add.add_argument("--mode", choices=("local", "transit"), help="default local")
    add.add_argument("--interest", action="store_true", help="live interest for the pull")
    add.add_argument("--push-interest", action="store_true", help="live interest for the push")
    add.add_argument(
        "--bridge", choices=("mqtt5", "mqtt311"), help="the remote is a plain MQTT broker"
    )
    for key in ("username", "password", "local-prefix", "remote-prefix"):
        add.add_argument(f"--{key}")
    for key in ("tls-ca", "tls-cert", "tls-key", "tls-server-name"):
        add.add_argument(f"--{key}", metavar="VALUE")
    for key in ("hop-limit", "batch-events", "window"):
        add.add_argument(f"--{key}", type=int, metavar="N")
    for key in ("heartbeat-seconds", "reconnect-seconds"):
        add.add_argument(f"--{key}", type=float, metavar="SECONDS")
    for parser in (listing, show, add, remove):  # also on ``links``: no defaults here
        add_target(parser, local=False, inherited=True)
        parser.set_defaults(func=_links)
