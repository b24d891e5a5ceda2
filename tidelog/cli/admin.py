"""``tidelog topics``, ``tidelog stats`` and ``tidelog cursors list|show|reset|delete``."""

from __future__ import annotations

import argparse
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tidelog.cli.common import CLIError, Rest, add_parser, add_target
from tidelog.storage import EventLog

T = TypeVar("T")


def _local(url: str, body: Callable[[EventLog], Awaitable[T]]) -> T:
    import trio

    from tidelog.storage import open_log

    async def run() -> T:
        async with open_log(url) as log:
            return await body(log)

    return trio.run(run)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


# -- topics ------------------------------------------------------------------------------


def _topics(args: argparse.Namespace) -> int:
    if args.storage:

        async def body(log: EventLog) -> list[dict[str, Any]]:
            return [{"topic": t.topic, "count": t.count} for t in await log.topics(args.filter)]

        topics = _local(args.storage, body)
    else:
        topics = Rest.from_args(args).get("/v1/topics", filter=args.filter)["topics"]
    if args.json:
        _print_json(topics)
        return 0
    width = max((len(t["topic"]) for t in topics), default=5)
    for topic in topics:
        print(f"{topic['topic']:<{width}}  {topic['count']}")
    return 0


# -- stats -------------------------------------------------------------------------------


def _stats(args: argparse.Namespace) -> int:
    if args.storage:

        async def body(log: EventLog) -> dict[str, Any]:
            from tidelog.engine.retained import NAMESPACE as RETAINED
            from tidelog.engine.sessions import NAMESPACE as SESSIONS

            state = await log.state()
            stats = log.statistics()
            retained = await log.list_state(RETAINED)
            return {
                "state": {
                    "first_offset": state.first_offset,
                    "next_offset": state.next_offset,
                    "first_timestamp": state.first_timestamp,
                    "last_timestamp": state.last_timestamp,
                    "bytes": state.bytes,
                },
                "backend": stats.backend,
                "segments": stats.segments,
                "topics": len(await log.topics()),
                "cursors": len(await log.list_cursors()),
                "retained": sum(1 for k in retained if not k.startswith("\x00")),
                "sessions": len(await log.list_state(SESSIONS)),
            }

        stats = _local(args.storage, body)
    else:
        stats = Rest.from_args(args).get("/v1/stats")
    if args.json:
        _print_json(stats)
        return 0
    state = stats["state"]
    lines = [
        ("events", state["next_offset"] - state["first_offset"]),
        ("offsets", f"{state['first_offset']}..{state['next_offset']} (next)"),
        ("bytes", state["bytes"]),
        ("first timestamp", state["first_timestamp"]),
        ("last timestamp", state["last_timestamp"]),
    ]
    if args.storage:
        lines += [(k, stats[k]) for k in ("backend", "segments", "topics", "cursors", "retained")]
        lines.append(("sessions", stats["sessions"]))
    else:
        log = stats["log"]
        writer = stats["writer"]
        lines += [
            ("backend", log["backend"]),
            ("segments", log["segments"]),
            ("published since start", stats["published"]),
            ("deliveries since start", stats["deliveries"]),
            ("commits", writer["batches"]),
            ("subscriber feeds", f"{stats['feeds']} ({stats['feeds_catching_up']} catching up)"),
            ("subscriptions", stats["subscriptions"]),
            ("retained", stats["retained"]),
            ("sessions", stats["sessions"]),
        ]
    for name, value in lines:
        print(f"{name + ':':<24}{value}")
    return 0


# -- cursors -----------------------------------------------------------------------------


def _cursor_json(key: str, position: int, metadata: dict[str, Any], end: int) -> dict[str, Any]:
    from tidelog.engine.cursors import split_stored_name

    owner, name = split_stored_name(key)
    return {
        "name": name,
        "owner": owner,
        "filter": metadata.get("filter"),
        "position": position,
        "lag": max(0, end - position),
    }


def _cursor_path(name: str) -> str:
    return "/v1/cursors/" + urllib.parse.quote(name, safe="")


def _cursors(args: argparse.Namespace) -> int:
    action = args.action
    if args.storage:
        result = _local(args.storage, lambda log: _cursors_local(log, args))
    else:
        result = _cursors_rest(Rest.from_args(args), args)
    if action == "delete":
        print(f"deleted cursor {args.name}")
    elif action == "list" and not args.json:
        rows = result["cursors"]
        width = max((len(c["name"]) for c in rows), default=4)
        for c in rows:
            owner = c.get("owner", "anonymous")
            print(f"{c['name']:<{width}}  position {c['position']:<10} lag {c['lag']:<10} "
                  f"filter {c['filter'] if c['filter'] is not None else '(all)'}"
                  + ("" if owner == "anonymous" else f"  owner {owner}"))  # fmt: skip
    else:
        _print_json(result)
    return 0


async def _cursors_local(log: EventLog, args: argparse.Namespace) -> Any:
    from tidelog.engine.positions import parse_position, resolve_position

    end = (await log.state()).next_offset
    if args.action == "list":
        cursors = await log.list_cursors()
        return {"cursors": [_cursor_json(c.name, c.position, c.metadata, end) for c in cursors]}
    from tidelog.engine.cursors import InvalidCursorNameError, stored_name

    try:
        key = stored_name(args.owner, args.name)
    except InvalidCursorNameError as exc:
        raise CLIError(str(exc)) from None
    cursor = await log.load_cursor(key)
    if cursor is None:
        raise CLIError(f"no cursor named {args.name!r}")
    if args.action == "delete":
        await log.delete_cursor(key)
        return None
    if args.action == "reset":
        offset = await resolve_position(log, parse_position(args.to), latest=end)
        await log.commit_cursor(cursor.name, offset, cursor.metadata)
        return _cursor_json(cursor.name, offset, cursor.metadata, end)
    return _cursor_json(cursor.name, cursor.position, cursor.metadata, end)


def _cursors_rest(rest: Rest, args: argparse.Namespace) -> Any:
    if args.action == "list":
        return rest.get("/v1/cursors")
    path = _cursor_path(args.name)
    query = {"owner": args.owner} if args.owner else None
    if args.action == "delete":
        return rest.call("DELETE", path, query)
    if args.action == "reset":
        cursor = rest.call("GET", path, query)  # 404 first if there is no such cursor
        offset = _resolve_rest(rest, args.to, cursor.get("filter") or "#")
        return rest.call("POST", path + "/commit", query, body={"offset": offset})
    return rest.call("GET", path, query)


def _resolve_rest(rest: Rest, position: str, topic_filter: str = "#") -> int:
    from tidelog.engine.positions import EARLIEST, LATEST, parse_position

    parsed = parse_position(position)
    if parsed in (EARLIEST, LATEST):
        state = rest.get("/v1/stats")["state"]
        return int(state["first_offset" if parsed == EARLIEST else "next_offset"])
    if parsed.kind == "time":
        return int(rest.get("/v1/offsets", time=parsed.value, filter=topic_filter)["offset"])
    return int(parsed.value)


# -- registration ------------------------------------------------------------------------


def register(commands: Any) -> None:
    topics = add_parser(
        commands,
        "topics",
        "list stored topics and their event counts",
        "tidelog topics 'devices/#'\ntidelog topics --storage lmdb://./tidelog-data --json",
    )
    topics.add_argument("filter", nargs="?", metavar="FILTER", help="only topics matching")
    topics.add_argument("--json", action="store_true", help="print JSON")
    add_target(topics)
    topics.set_defaults(func=_topics)

    stats = add_parser(
        commands,
        "stats",
        "show the log's extent and the broker's counters",
        "tidelog stats\ntidelog stats --json --url http://10.0.0.5:8080",
    )
    stats.add_argument("--json", action="store_true", help="print JSON")
    add_target(stats)
    stats.set_defaults(func=_stats)

    cursors = add_parser(
        commands,
        "cursors",
        "list, show, reset or delete durable cursors",
        "tidelog cursors list\ntidelog cursors reset billing --to time:2026-11-26T10:00:00Z",
    )
    actions = cursors.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = add_parser(actions, "list", "list every cursor with its lag", "tidelog cursors list")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_target(listing)
    show = add_parser(actions, "show", "show one cursor", "tidelog cursors show billing")
    show.add_argument("name", metavar="NAME")
    add_target(show)
    reset = add_parser(
        actions,
        "reset",
        "move a cursor to a position (its consumer re-reads or skips from there)",
        "tidelog cursors reset billing --to earliest\n"
        "tidelog cursors reset billing --to offset:1200",
    )
    reset.add_argument("name", metavar="NAME")
    reset.add_argument(
        "--to", required=True, metavar="POSITION", help="earliest, latest, offset:N or time:T"
    )
    add_target(reset)
    delete = add_parser(actions, "delete", "delete a cursor", "tidelog cursors delete billing")
    delete.add_argument("name", metavar="NAME")
    add_target(delete)
    for parser in (show, reset, delete):
        parser.add_argument(
            "--owner",
            metavar="USER",
            help="another user's cursor (admin_users only; default: your own)",
        )
    listing.set_defaults(owner=None)
    for parser in (listing, show, reset, delete):
        parser.set_defaults(func=_cursors)
