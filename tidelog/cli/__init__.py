"""The ``tidelog`` command: one small module per command group.

Each module in :data:`COMMANDS` has ``register(commands)``, which adds its
subcommands to the argparse sub-parsers and sets ``func`` (``args -> exit
code``) on each. Adding a command group is one new module and one line here.

Exit codes: 0 success; 1 an error (bad configuration, server unreachable,
storage locked, ...; one line on standard error, no traceback); 2 bad
command-line usage; 3 ``verify`` found problems.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tidelog.cli.common import CLIError, fail, leaf_error
from tidelog.errors import TidelogError

COMMANDS = [
    "tidelog.cli.serve",  # serve, config show
    "tidelog.cli.events",  # publish, tail, replay
    "tidelog.cli.admin",  # topics, stats, cursors
    "tidelog.cli.webhooks",  # webhooks
    "tidelog.cli.cluster",  # cluster
    "tidelog.cli.links",  # links
    "tidelog.cli.data",  # verify, reindex, dump, load
    "tidelog.cli.passwd",  # passwd (tidelog/security/passwd_cli.py)
    "tidelog.cli.demo",  # demo
]
"""Modules providing commands, in ``--help`` order."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidelog",
        description="tidelog: an event-sourced message broker (MQTT in front, a durable "
        "replayable log behind). Run 'tidelog COMMAND --help' for each command.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=version_line(),
        help="print the version and which compiled parts are active, then exit",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(commands)
    return parser


def version_line() -> str:
    """``tidelog VERSION (record checksums: PATH)``: PATH is ``c/sse4.2``, ``c/table``
    or ``python`` (tidelog/storage/checksums.py)."""
    import tidelog
    from tidelog.storage import checksums

    return f"tidelog {tidelog.__version__} (record checksums: {checksums.IMPLEMENTATION})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `tidelog replay ... | head`
        sys.stderr.close()
        return 0
    except (CLIError, TidelogError, OSError, BaseExceptionGroup) as exc:
        leaf = leaf_error(exc)
        if leaf is None:
            raise
        return fail(leaf)
    return code


if __name__ == "__main__":
    sys.exit(main())
