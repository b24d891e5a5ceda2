"""``tidelog topics``, ``tidelog stats`` and
``tidelog cursors list|show|create|fetch|commit|ack|nak|reset|delete``."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from tidelog.cli.common import (
    EventWriter,
    Rest,
    add_parser,
    add_start,
    add_target,
    event_json,
    human_bytes,
    human_time,
)
from tidelog.storage import EventLog

if TYPE_CHECKING:
    from tidelog.engine import Broker, Cursor

T = TypeVar("T")


def _local(url: str, body: Callable[[EventLog], Awaitable[T]]) -> T:
    import trio

    from tidelog.storage import open_log

    async def run() -> T:
        async with open_log(url) as log:
            return await body(log)

    return trio.run(run)


def _local_broker(url: str, body: Callable[[Broker], Awaitable[T]]) -> T:
    """``body`` on the engine over a data directory no server holds."""
    import trio

    import tidelog

    async def run() -> T:
        async with tidelog.open(url) as broker:
            return await body(broker)

    return trio.run(run)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


# -- topics ------------------------------------------------------------------------------


def _topics(args: argparse.Namespace) -> int:
    if args.storage:

        async def body(log: EventLog) -> list[dict[str, Any]]:
            return [
                {"topic": t.topic, "count": t.count, "last_offset": t.last_offset}
                for t in await log.topics(args.filter)
            ]  # as GET /v1/topics lists them

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
        ("bytes", f"{state['bytes']} ({human_bytes(state['bytes'])})"),
        ("first event", human_time(state["first_timestamp"])),
        ("last event", human_time(state["last_timestamp"])),
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


async def _cursor_json(cursor: Cursor) -> dict[str, Any]:
    """The REST cursor shape (``GET /v1/cursors/NAME``)."""
    from tidelog.api.routes.cursors import cursor_out

    return await cursor_out(cursor)


def _consumer_options(args: argparse.Namespace) -> dict[str, Any]:
    """The consumer options ``cursors create`` was given (docs/consumers.md)."""
    given: dict[str, Any] = {}
    if args.ack_policy is not None:
        given["ack_policy"] = args.ack_policy
    if args.ack_wait is not None:
        given["ack_wait"] = args.ack_wait
    if args.backoff is not None:
        given["backoff"] = [float(part) for part in args.backoff.split(",") if part.strip()]
    if args.max_deliver is not None:
        given["max_deliver"] = args.max_deliver
    if args.dead_letter_topic is not None:
        given["dead_letter_topic"] = args.dead_letter_topic
    if args.max_leased is not None:
        given["max_leased"] = args.max_leased
    if args.max_leased_per_member is not None:
        given["max_leased_per_member"] = args.max_leased_per_member
    return given


def _cursor_path(name: str, action: str = "") -> str:
    return "/v1/cursors/" + urllib.parse.quote(name, safe="") + action


def _cursors(args: argparse.Namespace) -> int:
    action = args.action
    if args.storage:
        result = _local_broker(args.storage, lambda broker: _cursors_local(broker, args))
    else:
        result = _cursors_rest(Rest.from_args(args), args)
    if action == "delete":
        print(f"deleted cursor {args.name}")
    elif action == "fetch":
        writer = EventWriter(args.format)
        for event in result["events"]:
            writer.write(event)
        writer.flush()
        print(_fetched(args, result), file=sys.stderr)
    elif action == "list" and not args.json:
        rows = result["cursors"]
        width = max((len(c["name"]) for c in rows), default=4)
        for c in rows:
            owner = c.get("owner", "anonymous")
            explicit = c.get("ack_policy") == "explicit"
            print(f"{c['name']:<{width}}  position {c['position']:<10} "
                  f"pending {c['pending']:<10} lag {c['lag']:<10} "
                  + (f"leased {c['leased']:<8} dead-lettered {c['dead_lettered']:<6} "
                     if explicit else "")
                  +
                  f"filter {c['filter'] if c['filter'] is not None else '(all)'}"
                  + ("" if owner == "anonymous" else f"  owner {owner}"))  # fmt: skip
    else:
        _print_json(result)
    return 0


def _fetched(args: argparse.Namespace, page: dict[str, Any]) -> str:
    """The summary line of ``cursors fetch`` (standard error: stdout holds the events)."""
    count = len(page["events"])
    text = f"fetched {count} event{'' if count == 1 else 's'}; next offset {page['next_offset']}"
    if page.get("skipped"):
        text += f" ({page['skipped']} offsets lost to retention were skipped)"
    if args.commit:
        return text + ", committed"
    return text + f" (tidelog cursors commit {args.name} {page['next_offset']} once processed)"


async def _cursors_local(broker: Broker, args: argparse.Namespace) -> Any:
    if args.action == "list":
        return {"cursors": [await _cursor_json(c) for c in await broker.cursors()]}
    if args.action == "create":
        from tidelog.engine.consumers import ConsumerOptions

        given = _consumer_options(args)
        options = ConsumerOptions.from_dict(given) if given else None
        return await _cursor_json(
            await broker.create_cursor(
                args.name, args.filter, start=args.start, owner=args.owner, options=options
            )
        )
    cursor = await broker.cursor(args.name, owner=args.owner)
    if args.action in ("ack", "nak"):
        if args.action == "ack":
            settled = await cursor.ack(args.offsets)
        else:
            settled = await cursor.nak(args.offsets, args.delay)
        pending = await cursor.pending()
        return {"settled": settled, "position": cursor.position, "pending": pending}
    if args.action == "delete":
        await broker.delete_cursor(args.name, owner=args.owner)
        return None
    if args.action == "reset":
        await cursor.commit(await broker.resolve(args.to))
    elif args.action == "commit":
        await cursor.commit(args.offset)
    elif args.action == "fetch":
        result = await cursor.fetch(args.limit, args.wait or None)
        page = {
            "events": [event_json(e) for e in result.events],
            "next_offset": result.next_offset,
            "skipped": cursor.skipped,
        }
        if args.commit:
            await cursor.commit(result.next_offset)
        return page
    return await _cursor_json(cursor)


def _cursors_rest(rest: Rest, args: argparse.Namespace) -> Any:
    if args.action == "list":
        return rest.get("/v1/cursors")
    path = _cursor_path(args.name)
    owner = {"owner": args.owner}  # another user's (admin_users), or None: one's own
    if args.action == "create":
        body = {"filter": args.filter, "start": args.start, **_consumer_options(args)}
        return rest.call("PUT", path, owner, body=body)
    if args.action == "ack":
        return rest.call("POST", path + "/ack", owner, body={"offsets": args.offsets})
    if args.action == "nak":
        body = {"offsets": args.offsets, "delay": args.delay}
        return rest.call("POST", path + "/nak", owner, body=body)
    if args.action == "delete":
        return rest.call("DELETE", path, owner)
    if args.action == "reset":
        cursor = rest.call("GET", path, owner)  # 404 first if there is no such cursor
        offset = _resolve_rest(rest, args.to, cursor.get("filter") or "#")
        return rest.call("POST", path + "/commit", owner, body={"offset": offset})
    if args.action == "commit":
        return rest.call("POST", path + "/commit", owner, body={"offset": args.offset})
    if args.action == "fetch":
        params = {"limit": args.limit, "wait_ms": int(args.wait * 1000), "encoding": "text"}
        page = rest.call("POST", path + "/fetch", {**params, **owner}, timeout=args.wait + 30)
        if args.commit:
            rest.call("POST", path + "/commit", owner, body={"offset": page["next_offset"]})
        return page
    return rest.call("GET", path, owner)


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
        "list, show, create, fetch from, commit, reset or delete durable cursors",
        "tidelog cursors list\ntidelog cursors fetch billing --commit\n"
        "tidelog cursors reset billing --to time:2026-11-26T10:00:00Z",
    )
    actions = cursors.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = add_parser(
        actions, "list", "list every cursor with its pending events and lag", "tidelog cursors list"
    )
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
    create = add_parser(
        actions,
        "create",
        "create a cursor on a topic filter (or confirm one with the same filter)",
        "tidelog cursors create billing --filter 'orders/#' --from earliest",
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument("--filter", metavar="FILTER", help="MQTT topic filter (default: all)")
    create.add_argument(
        "--ack-policy", choices=("cumulative", "explicit", "none"), help="default cumulative"
    )
    create.add_argument("--ack-wait", type=float, metavar="SECONDS", help="explicit: lease time")
    create.add_argument("--backoff", metavar="S,S,...", help="explicit: redelivery delays")
    create.add_argument("--max-deliver", type=int, metavar="N", help="explicit: then dead letter")
    create.add_argument("--dead-letter-topic", metavar="TOPIC", help="default $DLQ/<name>")
    create.add_argument("--max-leased", type=int, metavar="N", help="explicit: unacked at once")
    create.add_argument(
        "--max-leased-per-member", type=int, metavar="N", help="explicit: leased to one member"
    )
    add_start(create)
    add_target(create)
    delete = add_parser(actions, "delete", "delete a cursor", "tidelog cursors delete billing")
    delete.add_argument("name", metavar="NAME")
    add_target(delete)
    fetch = add_parser(
        actions,
        "fetch",
        "print the next events at a cursor (JSON lines) without moving it, unless --commit",
        "tidelog cursors fetch billing --limit 100 > batch.jsonl\n"
        "tidelog cursors commit billing 1234   # the next offset fetch printed\n"
        "tidelog cursors fetch billing --wait 30 --commit --format raw",
    )
    fetch.add_argument("name", metavar="NAME")
    fetch.add_argument("--limit", type=int, default=100, help="at most this many events")
    fetch.add_argument(
        "--wait", type=float, default=0.0, metavar="SECONDS",
        help="wait up to this long for a first event when there is none yet",
    )  # fmt: skip
    fetch.add_argument(
        "--commit", action="store_true", help="commit the next offset after printing the events"
    )
    fetch.add_argument("--format", choices=("jsonl", "raw"), default="jsonl")
    add_target(fetch)
    commit = add_parser(
        actions,
        "commit",
        "acknowledge everything below OFFSET (the next offset 'cursors fetch' printed)",
        "tidelog cursors commit billing 1234",
    )
    commit.add_argument("name", metavar="NAME")
    commit.add_argument("offset", metavar="OFFSET", type=int)
    add_target(commit)
    ack = add_parser(
        actions,
        "ack",
        "acknowledge events of an explicit cursor (consumer group)",
        "tidelog cursors ack workers 17 18 21",
    )
    nak = add_parser(
        actions,
        "nak",
        "give events of an explicit cursor back for redelivery",
        "tidelog cursors nak workers 17 --delay 30",
    )
    for parser in (ack, nak):
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("offsets", metavar="OFFSET", type=int, nargs="+")
        add_target(parser)
    nak.add_argument("--delay", type=float, metavar="SECONDS", help="default: the backoff")
    for parser in (show, create, reset, delete, fetch, commit, ack, nak):
        parser.add_argument(
            "--owner",
            metavar="USER",
            help="another user's cursor (admin_users only; default: your own)",
        )
    listing.set_defaults(owner=None)
    for parser in (listing, show, create, reset, delete, fetch, commit, ack, nak):
        parser.set_defaults(func=_cursors)
