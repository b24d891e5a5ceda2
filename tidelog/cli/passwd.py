"""``tidelog passwd``: the security layer's password file command (see
:mod:`tidelog.security.passwd_cli`), registered like every other command."""

from __future__ import annotations

import argparse
from typing import Any

from tidelog.cli.common import example
from tidelog.security import passwd_cli


def register(commands: Any) -> None:
    passwd_cli.register(commands)
    parser: argparse.ArgumentParser = commands.choices["passwd"]
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = example(
        "tidelog passwd users.txt alice                   # prompts twice\n"
        "echo secret | tidelog passwd users.txt bob --password-stdin\n"
        "tidelog passwd users.txt alice --token            # prints a bearer token once"
    )
    parser.set_defaults(func=passwd_cli.run)
