"""The ``tidelog`` command.

``tidelog serve`` runs the broker with its listeners; ``tidelog demo`` appends
a few events to the default LMDB log and replays them by offset, by topic and
by time.
"""

from __future__ import annotations

import argparse
import logging
import sys

import trio

from tidelog.errors import TidelogError
from tidelog.security import passwd_cli
from tidelog.server import ServerConfig, serve_until_signalled
from tidelog.storage import DEFAULT_URL, NewEvent, open_log


async def _demo(url: str) -> None:
    async with open_log(url) as log:
        before = await log.state()
        stored = await log.append(
            [NewEvent(f"devices/{n}/temperature", f"{20 + n}.5".encode()) for n in range(40, 45)]
        )
        print(f"appended offsets {stored[0].offset}..{stored[-1].offset} to {url}")
        print("device 42, replayed with the topic filter devices/42/#:")
        result = await log.read(before.next_offset, "devices/42/#")
        for event in result:
            print(f"  offset {event.offset} at {event.timestamp} ms: {event.payload.decode()}")
        since = await log.offset_for_time(stored[0].timestamp)
        print(f"first offset at or after {stored[0].timestamp} ms: {since}")
        state = await log.state()
        print(
            f"log holds offsets {state.first_offset}..{state.next_offset - 1}, {state.bytes} bytes"
        )


def _port(text: str) -> int | None:
    """A port number, or ``off`` to disable the listener."""
    if text == "off":
        return None
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number or 'off'") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tidelog", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the broker",
        description="Run the broker until SIGTERM/SIGINT. Example: "
        "tidelog serve --storage lmdb://./tidelog-data --mqtt-port 1883 --http-port off",
    )
    serve.add_argument(
        "--storage", default=DEFAULT_URL, help=f"storage URL (default {DEFAULT_URL})"
    )
    serve.add_argument(
        "--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument("--mqtt-port", type=_port, default=1883, help="MQTT TCP port or 'off'")
    serve.add_argument(
        "--mqtt-tls-port",
        type=_port,
        default=8883,
        help="MQTT over TLS port or 'off' (runs only with --tls-cert and --tls-key)",
    )
    serve.add_argument("--tls-cert", help="PEM certificate chain for MQTT over TLS")
    serve.add_argument("--tls-key", help="PEM private key for MQTT over TLS")
    serve.add_argument("--ws-port", type=_port, default=8083, help="WebSocket port or 'off'")
    serve.add_argument("--http-port", type=_port, default=8080, help="REST/metrics port or 'off'")
    demo = commands.add_parser("demo", help="append a few events and replay them")
    demo.add_argument("--storage", default=DEFAULT_URL, help=f"storage URL (default {DEFAULT_URL})")
    passwd_cli.register(commands)  # tidelog passwd (tidelog/security/passwd_cli.py)
    args = parser.parse_args(argv)
    if args.command == "passwd":
        return int(args.handler(args))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        if args.command == "serve":
            config = ServerConfig(
                storage=args.storage,
                bind=args.bind,
                mqtt_port=args.mqtt_port,
                mqtt_tls_port=args.mqtt_tls_port,
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                ws_port=args.ws_port,
                http_port=args.http_port,
            )
            trio.run(serve_until_signalled, config)
        elif args.command == "demo":
            trio.run(_demo, args.storage)
    except (TidelogError, OSError) as exc:
        print(f"tidelog: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # trio's nurseries wrap what fails inside them (e.g. opening the log under
        # the server's nursery): expected errors still get one line each
        expected, unexpected = group.split((TidelogError, OSError))
        if unexpected is not None or expected is None:
            raise
        for error in _leaves(expected):
            print(f"tidelog: {error}", file=sys.stderr)
        return 1
    return 0


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    leaves: list[BaseException] = []
    for exc in group.exceptions:
        leaves.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return leaves


if __name__ == "__main__":
    sys.exit(main())
