"""``tidelog webhooks list|show|put|delete``: a running server's webhooks over REST
(creating one needs ``security.admin_users``; docs/consumers.md)."""

from __future__ import annotations

import argparse
import json
import urllib.parse
from typing import Any

from tidelog.cli.common import CLIError, Rest, add_parser, add_target


def _path(name: str) -> str:
    return "/v1/webhooks/" + urllib.parse.quote(name, safe="")


def _body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"url": args.endpoint, "secret": args.secret}
    for key in ("filter", "start", "batch", "timeout", "concurrency", "retries"):
        value = getattr(args, key)
        if value is not None:
            body[key] = value
    headers: dict[str, str] = {}
    for item in args.header or ():
        name, sep, value = item.partition(":")
        if not sep:
            raise CLIError(f"--header {item!r}: expected NAME:VALUE")
        headers[name.strip()] = value.strip()
    if headers:
        body["headers"] = headers
    return body


def _webhooks(args: argparse.Namespace) -> int:
    rest = Rest.from_args(args)
    owner = {"owner": getattr(args, "owner", None)}
    if args.action == "list":
        result = rest.get("/v1/webhooks")
        if not args.json:
            for hook in result["webhooks"]:
                status = hook["status"]
                error = status["last_error"]
                print(
                    f"{hook['name']}  {status['state']:<9} delivered {status['delivered']:<8} "
                    f"lag {status['lag']:<8} {hook['url']}"
                    + (f"  last error: {error}" if error else "")
                )
            return 0
    elif args.action == "show":
        result = rest.call("GET", _path(args.name), owner)
    elif args.action == "put":
        result = rest.call("PUT", _path(args.name), owner, body=_body(args))
    else:
        rest.call("DELETE", _path(args.name), owner)
        print(f"deleted webhook {args.name}")
        return 0
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def register(commands: Any) -> None:
    webhooks = add_parser(
        commands,
        "webhooks",
        "list, show, create or replace, or delete webhooks (HTTP push of events)",
        "tidelog webhooks list\n"
        "tidelog webhooks put orders --endpoint https://example.com/hook "
        "--secret whsec_... --filter 'orders/#'",
    )
    actions = webhooks.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = add_parser(actions, "list", "list webhooks and their status", "tidelog webhooks list")
    listing.add_argument("--json", action="store_true", help="print JSON")
    show = add_parser(actions, "show", "show a webhook and its status", "tidelog webhooks show h")
    put = add_parser(
        actions,
        "put",
        "create or replace a webhook (admin_users)",
        "tidelog webhooks put h --endpoint http://127.0.0.1:9000/ --secret whsec_... --batch 100",
    )
    delete = add_parser(actions, "delete", "delete a webhook", "tidelog webhooks delete h")
    for parser in (show, put, delete):
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--owner", metavar="USER", help="another user's (admin_users only)")
    put.add_argument("--endpoint", required=True, metavar="URL", help="where events are POSTed")
    put.add_argument("--secret", required=True, help="a Standard Webhooks secret, whsec_...")
    put.add_argument("--filter", metavar="FILTER", help="MQTT topic filter (default: all)")
    put.add_argument("--start", metavar="POSITION", help="earliest, latest, offset:N, time:T")
    put.add_argument("--batch", type=int, help="events per request (default 1)")
    put.add_argument("--timeout", type=float, metavar="SECONDS", help="per request (default 10)")
    put.add_argument("--concurrency", type=int, help="requests at once (default 1: in order)")
    put.add_argument("--retries", type=int, help="retries before dead letters (default 8)")
    put.add_argument("--header", action="append", metavar="NAME:VALUE", help="extra header")
    for parser in (listing, show, put, delete):
        add_target(parser, local=False)
        parser.set_defaults(func=_webhooks)
