"""``tidelog publish``, ``tidelog tail`` and ``tidelog replay``."""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.parse
from typing import Any

from tidelog.cli.common import (
    CLIError,
    EventWriter,
    Rest,
    add_parser,
    add_start,
    add_target,
    event_json,
    iter_lines,
)
from tidelog.storage import NewEvent, Properties

BATCH = 1000
"""Events per REST batch when publishing lines from standard input."""


# -- publish -----------------------------------------------------------------------------


def _payloads(args: argparse.Namespace) -> list[bytes]:
    if args.message is not None:
        return [args.message.encode("utf-8")]
    if args.file is not None:
        try:
            with open(args.file, "rb") as file:
                return [file.read()]
        except OSError as exc:
            raise CLIError(f"cannot read {args.file}: {exc.strerror}") from None
    return list(iter_lines(sys.stdin.buffer))


def _publish(args: argparse.Namespace) -> int:
    # credentials first: --password-stdin takes the first line, the payloads the rest
    rest = None if args.storage else Rest.from_args(args)
    payloads = _payloads(args)
    if not payloads:
        raise CLIError("nothing to publish (standard input was empty)")
    props = Properties(content_type=args.content_type) if args.content_type else None
    if rest is None:
        offsets = _publish_local(args, payloads, props)
    elif args.file is not None:
        offsets = [_publish_file(args, payloads[0])]
    else:
        offsets = _publish_rest(rest, args, payloads)
    span = f"offset {offsets[0]}" if len(offsets) == 1 else f"offsets {offsets[0]}..{offsets[-1]}"
    print(
        f"published {len(offsets)} event{'s' if len(offsets) > 1 else ''} to {args.topic}: {span}"
    )
    return 0


def _publish_rest(rest: Rest, args: argparse.Namespace, payloads: list[bytes]) -> list[int]:
    # the batch endpoint even for one event: its properties are exactly what we send
    # (urllib would add a form content type to a raw POST, stored as the event's)
    offsets: list[int] = []
    for start in range(0, len(payloads), BATCH):
        events = []
        for payload in payloads[start : start + BATCH]:
            event: dict[str, Any] = {
                "topic": args.topic,
                "payload": base64.b64encode(payload).decode("ascii"),
                "qos": args.qos,
                "retain": args.retain,
            }
            if args.content_type:
                event["properties"] = {"content_type": args.content_type}
            events.append(event)
        stored = rest.call("POST", "/v1/events", body={"events": events})
        offsets += [e["offset"] for e in stored["events"]]
    return offsets


def _publish_file(args: argparse.Namespace, payload: bytes) -> int:
    """One file as the raw body of ``POST /v1/topics/<topic>``: sent as it is, so a file
    up to the server's body limit fits (base64 in JSON would grow it by a third)."""
    stored = Rest.from_args(args).upload(
        "/v1/topics/" + urllib.parse.quote(args.topic, safe="/"),
        {"qos": args.qos, "retain": "true" if args.retain else None},
        payload,
        args.content_type or "application/octet-stream",
    )
    return int(stored["offset"])


def _publish_local(
    args: argparse.Namespace, payloads: list[bytes], props: Properties | None
) -> list[int]:
    import trio

    import tidelog

    async def run() -> list[int]:
        async with tidelog.open(args.storage) as broker:
            offsets: list[int] = []
            for start in range(0, len(payloads), BATCH):
                batch = [
                    NewEvent(args.topic, p, args.qos, args.retain, props)
                    for p in payloads[start : start + BATCH]
                ]
                offsets += [e.offset for e in await broker.publish_many(batch)]
            return offsets

    return trio.run(run)


# -- tail --------------------------------------------------------------------------------


def _tail(args: argparse.Namespace) -> int:
    writer = EventWriter(args.format)
    rest = Rest.from_args(args, timeout=60)  # the server sends a keepalive every 15 s
    response = rest.open(
        "GET",
        "/v1/events/stream",
        {"filter": args.filter, "from": args.start, "encoding": "text"},
        headers={"accept": "text/event-stream"},
    )
    last: int | None = None
    try:
        with response:
            for raw in response:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                writer.write(event)
                writer.flush()
                last = event["offset"]
                if args.count is not None and writer.count >= args.count:
                    return 0
    except (OSError, ValueError) as exc:
        raise CLIError(_resume_hint(f"the stream broke ({exc})", last)) from None
    raise CLIError(_resume_hint("the server ended the stream", last))


def _resume_hint(what: str, last: int | None) -> str:
    if last is None:
        return what
    return f"{what} after offset {last}; resume with --from offset:{last + 1}"


# -- replay ------------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    writer = EventWriter(args.format)
    if args.storage:
        _replay_local(args, writer)
    else:
        _replay_rest(args, writer)
    writer.flush()
    print(f"replayed {writer.count} events", file=sys.stderr)
    return 0


def _replay_rest(args: argparse.Namespace, writer: EventWriter) -> None:
    rest = Rest.from_args(args)
    state = rest.get("/v1/stats")["state"]
    start = state["first_offset"]
    end = state["next_offset"]
    if args.from_time is not None:
        start = rest.get("/v1/offsets", time=args.from_time, filter=args.filter)["offset"]
    if args.to_time is not None:
        end = rest.get("/v1/offsets", time=args.to_time, filter=args.filter)["offset"]
    while start < end:
        page = rest.get(
            "/v1/events",
            filter=args.filter,
            from_offset=start,
            to_offset=end,
            limit=10_000,
            max_bytes=16 * 1024 * 1024,
            encoding="text",
        )
        for event in page["events"]:
            writer.write(event)
        if page["next_offset"] <= start:
            break
        start = page["next_offset"]


def _replay_local(args: argparse.Namespace, writer: EventWriter) -> None:
    import trio

    from tidelog.engine.positions import parse_time
    from tidelog.storage import open_log

    async def run() -> None:
        async with open_log(args.storage) as log:
            state = await log.state()
            start, end = state.first_offset, state.next_offset
            if args.from_time is not None:
                start = await log.offset_for_time(parse_time(args.from_time))
            if args.to_time is not None:
                end = await log.offset_for_time(parse_time(args.to_time))
            while start < end:
                result = await log.read(start, args.filter, limit=10_000, end=end)
                for event in result.events:
                    writer.write(event_json(event))
                if result.next_offset <= start:
                    break
                start = result.next_offset

    trio.run(run)


# -- registration ------------------------------------------------------------------------


def register(commands: Any) -> None:
    publish = add_parser(
        commands,
        "publish",
        "publish events to a topic: one message, a file, or one event per line of stdin",
        "tidelog publish devices/42/temp --message 21.5 --qos 1\n"
        "tidelog publish logs/app --file report.pdf --content-type application/pdf\n"
        "journalctl -o cat | tidelog publish logs/host1",
    )
    publish.add_argument("topic", metavar="TOPIC")
    source = publish.add_mutually_exclusive_group()
    source.add_argument("--message", "-m", help="the payload (UTF-8 text)")
    source.add_argument(
        "--file",
        "-f",
        help="a file whose whole content is the payload, sent as raw bytes (stored with "
        "--content-type, default application/octet-stream)",
    )
    publish.add_argument("--qos", type=int, choices=(0, 1, 2), default=1)
    publish.add_argument("--retain", action="store_true", help="set the retain flag")
    publish.add_argument("--content-type", help="stored as the events' content type")
    add_target(publish)
    publish.set_defaults(func=_publish)

    tail = add_parser(
        commands,
        "tail",
        "follow the live events of a topic filter (JSON lines), from a position if given",
        "tidelog tail 'devices/#'\n"
        "tidelog tail 'devices/+/temp' --from offset:1200   # resume after offset 1199\n"
        "tidelog tail orders/# --from time:2026-11-26T10:00:00Z --count 10",
    )
    tail.add_argument("filter", metavar="FILTER", help="MQTT topic filter")
    add_start(tail)
    tail.add_argument("--count", type=int, help="stop after this many events")
    tail.add_argument("--format", choices=("jsonl", "raw"), default="jsonl")
    add_target(tail, local=False)
    tail.set_defaults(func=_tail)

    replay = add_parser(
        commands,
        "replay",
        "write the stored events of a filter in a time range to standard output",
        "tidelog replay 'devices/#' --from-time 2026-11-26T10:00:00Z "
        "--to-time 2026-11-26T10:05:00Z > ten-oclock.jsonl\n"
        "tidelog replay cam/7/jpeg --format raw --storage lmdb://./tidelog-data",
    )
    replay.add_argument("filter", metavar="FILTER", help="MQTT topic filter")
    replay.add_argument(
        "--from-time", metavar="T", help="RFC 3339 or epoch ms (default: the first event)"
    )
    replay.add_argument(
        "--to-time", metavar="T", help="exclusive; RFC 3339 or epoch ms (default: now)"
    )
    replay.add_argument(
        "--format",
        choices=("jsonl", "raw"),
        default="jsonl",
        help="jsonl: one event per line; raw: payloads only, one per line",
    )
    add_target(replay)
    replay.set_defaults(func=_replay)
