"""``tidelog passwd FILE USER``: manage the password file.

    tidelog passwd users.txt alice                      # prompt for the password (twice)
    echo secret | tidelog passwd users.txt alice --password-stdin
    tidelog passwd users.txt alice --token              # add a bearer token, print it once
    tidelog passwd users.txt alice -D                   # delete alice (password and tokens)

The file is created if missing (mode 0600) and rewritten atomically. A running
server reads it at start; restart it to apply changes.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from tidelog.security.errors import SecurityConfigError
from tidelog.security.passwords import SCRYPT_N, PasswordFile, hash_password, new_token


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``passwd`` sub-command to the ``tidelog`` parser."""
    parser = commands.add_parser(
        "passwd",
        help="add, change or delete a user in a password file",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("file", help="the password file (created if missing)")
    parser.add_argument("user", help="the user name")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("-D", "--delete", action="store_true", help="delete the user")
    action.add_argument(
        "--token", action="store_true", help="add a bearer token for the user and print it"
    )
    action.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    parser.add_argument(
        "--scrypt-n", type=int, default=SCRYPT_N, help=f"scrypt cost N (default {SCRYPT_N})"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        passwords = PasswordFile.load(path) if path.exists() else PasswordFile()
        if args.delete:
            if not passwords.delete(args.user):
                print(f"tidelog: no user {args.user!r} in {path}", file=sys.stderr)
                return 1
            passwords.save(path)
            print(f"deleted {args.user}", file=sys.stderr)
            return 0
        if args.token:
            token = new_token()
            passwords.add_token(args.user, token)
            passwords.save(path)
            print(token)
            return 0
        password = _read_password(args.password_stdin)
        if password is None:
            return 1
        passwords.set_password(args.user, hash_password(password, n=args.scrypt_n))
        passwords.save(path)
    except (SecurityConfigError, ValueError, OSError) as exc:
        print(f"tidelog: {exc}", file=sys.stderr)
        return 1
    print(f"password of {args.user} set in {path}", file=sys.stderr)
    return 0


def _read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("tidelog: the passwords differ", file=sys.stderr)
            return None
    if not password:
        print("tidelog: the password is empty", file=sys.stderr)
        return None
    return password
