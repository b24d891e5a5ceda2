"""What the command modules share: errors, the REST client, targets, output.

A client command works against a running server (``--url``, default
``$TIDELOG_URL`` or ``http://127.0.0.1:8080``) or, where that makes sense,
directly on a data directory no server holds (``--storage URL``). Against a
server it authenticates with ``--user`` and a password (``--password-stdin``:
the first line of standard input; else ``$TIDELOG_PASSWORD``) as HTTP Basic, or
``--token`` (default ``$TIDELOG_TOKEN``) as a bearer token. The REST
client is the standard library's ``urllib``: the commands need no extra
dependency.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import IO, Any

from tidelog.errors import LogLockedError, TidelogError
from tidelog.storage import Event, Properties

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "TIDELOG_URL"
TOKEN_ENV = "TIDELOG_TOKEN"
PASSWORD_ENV = "TIDELOG_PASSWORD"


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 1."""


def leaf_error(exc: BaseException) -> BaseException | None:
    """The error to report: the first expected error inside exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = leaf_error(inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, CLIError | TidelogError | OSError):
        return exc
    return None


def fail(exc: BaseException) -> int:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        message = f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror}"
    if isinstance(exc, LogLockedError):
        message += " (stop the server, or use --url to go through it)"
    print(f"tidelog: {message}", file=sys.stderr)
    return 1


def example(text: str) -> str:
    """An epilog with an example, for ``--help``."""
    return "example:\n  " + text.strip().replace("\n", "\n  ")


def add_parser(
    commands: Any, name: str, help_text: str, example_text: str, **kwargs: Any
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=example(example_text),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )
    return parser


def add_start(parser: argparse.ArgumentParser) -> None:
    """``--from POSITION`` (into ``args.start``), default ``latest``."""
    parser.add_argument(
        "--from",
        dest="start",
        default="latest",
        metavar="POSITION",
        help="earliest, latest (default), offset:N or time:T",
    )


def add_target(
    parser: argparse.ArgumentParser, *, local: bool = True, inherited: bool = False
) -> None:
    """``--url`` (a running server) with its credentials (``--user``,
    ``--password-stdin``, ``--token``) and, if ``local``, ``--storage`` (a data
    directory).

    ``inherited``: the parent command defines them too (``tidelog links --url X
    remove core``): here they get no default (``argparse.SUPPRESS``), so a value
    given before the subcommand is not overwritten by the subcommand's default."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if inherited else value

    parser.add_argument(
        "--url",
        default=default(os.environ.get(URL_ENV, DEFAULT_URL)),
        help=f"the server's REST URL (default ${URL_ENV} or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--user",
        metavar="NAME",
        default=default(None),
        help=f"authenticate as this user (password: --password-stdin or ${PASSWORD_ENV})",
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        default=default(False),
        help="read the password from the first line of standard input",
    )
    parser.add_argument(
        "--token",
        default=default(os.environ.get(TOKEN_ENV) or None),
        help=f"authenticate with this bearer token (default ${TOKEN_ENV})",
    )
    if local:
        parser.add_argument(
            "--storage",
            metavar="URL",
            default=default(None),
            help="work directly on this storage URL (e.g. lmdb://./tidelog-data) "
            "instead of a server; no server may hold it",
        )


# -- REST ------------------------------------------------------------------------------


def credentials_header(args: argparse.Namespace) -> dict[str, str]:
    """The ``Authorization`` header the command's credentials ask for (none without)."""
    token = getattr(args, "token", None)
    user = getattr(args, "user", None)
    from_stdin = getattr(args, "password_stdin", False)
    if token and (user or from_stdin):
        raise CLIError("give --token or --user (with a password), not both")
    if token:
        return {"authorization": f"Bearer {token}"}
    if from_stdin and not user:
        raise CLIError("--password-stdin needs --user")
    if not user:
        return {}
    if from_stdin:
        password = getattr(args, "_password", None)
        if password is None:
            line = sys.stdin.buffer.readline()
            password = line.rstrip(b"\r\n").decode("utf-8")
            args._password = password  # read once, even for several clients
    else:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            raise CLIError(f"--user needs a password: --password-stdin or ${PASSWORD_ENV}")
    basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"authorization": f"Basic {basic}"}


class Rest:
    """A tiny JSON client for the server's REST API."""

    def __init__(
        self, url: str, timeout: float = 30.0, *, headers: dict[str, str] | None = None
    ) -> None:
        self.base = url.rstrip("/")
        self.timeout = timeout
        self.headers = dict(headers or {})
        """Sent with every request (the credentials)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace, timeout: float = 30.0) -> Rest:
        """A client for the command's ``--url`` with its credentials."""
        return cls(args.url, timeout, headers=credentials_header(args))

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        suffix = "?" + urllib.parse.urlencode(query) if query else ""
        return self.base + path + suffix

    def open(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The raw response (a file-like object); CLIError for failures and 4xx/5xx."""
        headers = {**self.headers, **(headers or {})}
        if body is not None:
            data = json.dumps(body).encode()
            headers["content-type"] = "application/json"
        request = urllib.request.Request(
            self.url(path, params), data=data, method=method, headers=headers
        )
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raise _http_error(method, path, exc.code, exc.reason, exc) from None
        except urllib.error.URLError as exc:
            reason = getattr(exc.reason, "strerror", None) or exc.reason
            raise CLIError(
                f"cannot reach the server at {self.base}: {reason} "
                "(is it running? use --url, or --storage for a data directory)"
            ) from None
        except TimeoutError:
            raise CLIError(f"the server at {self.base} did not answer in time") from None

    def upload(self, path: str, params: dict[str, Any], data: bytes, content_type: str) -> Any:
        """POST ``data`` as the raw body (bytes stay bytes: no base64, no JSON) and return
        the JSON answer.

        A server refusing a body (413 past its ``http.max_body_bytes``) answers before it
        has read it all and closes the connection, so sending fails half-way ("Broken
        pipe"); the answer it sent is read and reported all the same.
        """
        target = urllib.parse.urlsplit(self.url(path, params))
        connection_class = (
            http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        )
        connection = connection_class(target.netloc, timeout=self.timeout)
        where = f"{target.path}?{target.query}" if target.query else target.path
        cut_off = False
        try:
            try:
                connection.request("POST", where, body=data, headers={"content-type": content_type})
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True  # a server refusing the body answers early: read its answer
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            if cut_off:
                raise CLIError(
                    f"POST {path}: the server at {self.base} closed the connection before "
                    f"taking the whole body ({len(data)} bytes); is it over the server's "
                    "http.max_body_bytes?"
                ) from None
            reason = getattr(exc, "strerror", None) or exc
            raise CLIError(
                f"cannot reach the server at {self.base}: {reason} "
                "(is it running? use --url, or --storage for a data directory)"
            ) from None
        finally:
            connection.close()
        if response.status >= 400:
            raise _http_error("POST", path, response.status, response.reason, raw)
        return json.loads(raw) if raw else None

    def call(self, method: str, path: str, params: dict[str, Any] | None = None, **kw: Any) -> Any:
        with self.open(method, path, params, **kw) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params)


def _http_error(method: str, path: str, status: int, reason: str, body: Any) -> CLIError:
    """A failed request as one line, with the problem's ``detail`` when the server sent
    one (``body`` is the raw body or something with ``read()``)."""
    detail = reason
    try:
        problem = json.loads(body if isinstance(body, bytes) else body.read())
        detail = problem.get("detail") or problem.get("title") or detail
    except (ValueError, OSError, AttributeError):
        pass
    return CLIError(f"{method} {path}: {status} {detail}")


# -- events ------------------------------------------------------------------------------


def properties_json(props: Properties | None) -> dict[str, Any] | None:
    if props is None:
        return None
    out = props.to_dict()
    if out.get("correlation_data") is not None:
        out["correlation_data"] = base64.b64encode(out["correlation_data"]).decode("ascii")
    return out


def properties_from_json(data: dict[str, Any] | None) -> Properties | None:
    if data is None:
        return None
    data = dict(data)
    if data.get("correlation_data") is not None:
        data["correlation_data"] = base64.b64decode(data["correlation_data"])
    if "user_properties" in data:
        data["user_properties"] = tuple(tuple(pair) for pair in data["user_properties"])
    return Properties.from_dict(data)


def event_json(event: Event) -> dict[str, Any]:
    """The REST event shape (payload as text when it is UTF-8, else base64)."""
    try:
        payload, encoding = event.payload.decode("utf-8"), "text"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(event.payload).decode("ascii"), "base64"
    return {
        "offset": event.offset,
        "timestamp": event.timestamp,
        "topic": event.topic,
        "payload": payload,
        "encoding": encoding,
        "qos": event.qos,
        "retain": event.retain,
        "properties": properties_json(event.properties) or {},
    }


def payload_of(event: dict[str, Any]) -> bytes:
    """The payload bytes of an event in the REST shape."""
    if event.get("encoding") == "text":
        return str(event["payload"]).encode("utf-8")
    return base64.b64decode(event["payload"])


class EventWriter:
    """Writes events (REST shape dicts) to stdout as JSON lines or raw payloads."""

    def __init__(self, fmt: str, out: IO[bytes] | None = None) -> None:
        self.fmt = fmt
        self.out = out or sys.stdout.buffer
        self.count = 0

    def write(self, event: dict[str, Any]) -> None:
        if self.fmt == "raw":
            self.out.write(payload_of(event) + b"\n")
        else:
            self.out.write(json.dumps(event, ensure_ascii=False).encode() + b"\n")
        self.count += 1

    def flush(self) -> None:
        self.out.flush()


# -- numbers people read ------------------------------------------------------------------


def human_time(ms: int | None, now_ms: int | None = None) -> str:
    """Epoch milliseconds as UTC RFC 3339 with its age: ``2026-11-26T10:00:00.123Z (5 min ago)``."""
    if ms is None:
        return "-"
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    age = ((now_ms if now_ms is not None else int(time.time() * 1000)) - ms) / 1000
    return f"{text} ({human_duration(age)} ago)" if age >= 0 else f"{text} (in the future)"


def human_duration(seconds: float) -> str:
    """``42 s``, ``5 min``, ``3.2 h``, ``12 days``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def human_bytes(count: int) -> str:
    """``512 B``, ``1.5 KiB``, ``13.0 MiB``, ``2.1 GiB``."""
    if count < 1024:
        return f"{count} B"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


# -- progress ----------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on standard error (only when it is a terminal,
    unless forced); :meth:`done` prints nothing itself."""

    def __init__(self, label: str, total: int, *, enabled: bool | None = None) -> None:
        self.label = label
        self.total = max(total, 1)
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = 0.0
        self.started = time.monotonic()

    def update(self, done: int, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        fraction = min(1.0, done / self.total)
        bar = "#" * int(fraction * 30)
        sys.stderr.write(
            f"\r{self.label} [{bar:<30}] {fraction:6.1%} {done}/{self.total}"
            f" {now - self.started:5.1f}s"
        )
        sys.stderr.flush()

    def done(self, final: int) -> None:
        if self.enabled:
            self.update(final, force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()


def iter_lines(stream: IO[bytes]) -> Iterator[bytes]:
    for line in stream:
        yield line.rstrip(b"\r\n")
