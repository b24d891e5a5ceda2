"""The one launcher of ``tidelog serve`` as a subprocess, for tests and benchmarks.

A :class:`ServerProcess` runs ``python -m tidelog serve ARGS`` from a source tree
(this one by default, or another checkout for an A/B benchmark), reads its
standard error from a file it is written to (``log_path`` when given, appended
across restarts; a pipe could make a server that logs a lot wait for the
reader) in a thread, into :attr:`ServerProcess.lines`, and learns each
listener's port from its ready line (``MQTT listening on 127.0.0.1:PORT``), so
port 0 works and nothing races for a free port. It can be started again on the
same data after a kill (the crash harness), waited for from a blocking test or
from trio, stopped with a signal or killed.

Only the ``/metrics`` waits need httpx (a dev dependency). The environment of
the server holds no ``TIDELOG_*`` variable from outside
(the tests' configuration is explicit) and imports tidelog from the checkout.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import trio

import tidelog

HOST = "127.0.0.1"
SOURCE_ROOT = Path(tidelog.__file__).resolve().parents[1]
"""The directory holding the ``tidelog`` package this process imports."""
READY = re.compile(r'([\w-]+) listening on [^\s"]+:(\d+)')
"""A listener's ready line: its name and bound port."""
KEPT_LINES = 10_000
"""Lines kept in memory when ``log_path`` keeps every line."""
READY_TIMEOUT = 60.0
"""Seconds a server gets to report its listeners ready (generous: a loaded machine
has taken more than 30 to start one)."""


class ServerNotReady(RuntimeError):
    """The server exited, or a listener did not report ready in time."""


def default_storage(directory: Path) -> str:
    """The default backend (LMDB) when this checkout has it, SQLite until then."""
    try:
        import tidelog.storage.lmdb_log  # noqa: F401
    except ImportError:
        return f"sqlite://{directory.resolve()}/log.db"
    return f"lmdb://{directory.resolve()}/data"


def server_env(checkout: Path = SOURCE_ROOT, **extra: str) -> dict[str, str]:
    """The environment for a subprocess: no ``TIDELOG_*`` from outside, ``checkout``
    first on the import path, then ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIDELOG_")}
    path = os.pathsep.join(filter(None, [str(checkout), base.get("PYTHONPATH")]))
    return {**base, "PYTHONPATH": path, **extra}


class ServerProcess:
    """``python -m tidelog serve ARGS`` (plus the arguments of each :meth:`launch`).

    ``cwd`` defaults to ``log_path``'s directory, else the current one; ``nofile``
    sets the server's RLIMIT_NOFILE; ``env`` adds environment variables.
    """

    def __init__(
        self,
        *args: str,
        cwd: Path | None = None,
        log_path: Path | None = None,
        checkout: Path = SOURCE_ROOT,
        nofile: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.cwd = cwd or (log_path.parent if log_path is not None else Path.cwd())
        self.checkout = checkout
        self.nofile = nofile
        self.env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self._ports_before: dict[str, int] = {}
        self._run_ports: dict[str, int] = {}
        self.lines: list[str] = []
        """The lines the server wrote to standard error, over all its runs (the last
        :data:`KEPT_LINES` when ``log_path`` keeps them all)."""
        self._own_log: Path | None = None
        self.stop_seconds = 0.0
        """How long the last :meth:`stop` took."""
        self._reader: threading.Thread | None = None
        self._changed = threading.Condition()

    @property
    def ports(self) -> dict[str, int]:
        """Bound port by listener name: the current run's ready lines, and until a
        listener reports again after a restart, its port from the run before (clients
        of a restarting server retry there)."""
        return {**self._ports_before, **self._run_ports}

    @property
    def storage(self) -> str | None:
        """The ``--storage`` argument, if any."""
        args = self.args
        return args[args.index("--storage") + 1] if "--storage" in args else None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not launched"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def url(self) -> str:
        """The REST API's base URL."""
        return f"http://{HOST}:{self.ports['HTTP']}"

    @property
    def output(self) -> str:
        """Everything the server wrote to standard error (all runs)."""
        if self.log_path is not None and self.log_path.exists():
            return self.log_path.read_text("utf-8", errors="replace")
        return "".join(self.lines)

    def tail(self, lines: int = 30) -> str:
        return "".join(self.lines[-lines:])

    # -- starting ------------------------------------------------------------------------

    def launch(self, *extra: str) -> None:
        """Start the server (again, after it ended) without waiting for it.

        Standard error goes to a file (``log_path``, else a temporary one), never a
        pipe: a server that logs a lot never waits for this process to read it.
        A thread follows the file for ready lines."""
        assert not self.running, "already running"
        self._join()
        self._ports_before, self._run_ports = self.ports, {}
        log_path = self.log_path
        if log_path is None:
            if self._own_log is None:
                fd, name = tempfile.mkstemp(prefix="tidelog-serve-", suffix=".log")
                os.close(fd)
                self._own_log = Path(name)
            log_path = self._own_log
        start = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tidelog", "serve", *self.args, *extra],
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=server_env(self.checkout, **self.env),
                preexec_fn=self._limit_files if self.nofile is not None else None,
            )
        self._reader = threading.Thread(
            target=self._follow, args=(self.process, log_path, start), daemon=True
        )
        self._reader.start()

    def _limit_files(self) -> None:
        import resource

        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def _follow(self, process: subprocess.Popen[bytes], path: Path, start: int) -> None:
        """Read the lines the server appends to ``path`` until it has exited."""
        partial = b""
        with path.open("rb") as log:
            log.seek(start)
            while True:
                exited = process.poll() is not None
                data = log.read(1 << 20)
                if data:
                    *complete, partial = (partial + data).split(b"\n")
                    self._take([line.decode("utf-8", "replace") + "\n" for line in complete])
                elif exited:
                    break
                else:
                    time.sleep(0.02)
        if partial:
            self._take([partial.decode("utf-8", "replace")])
        with self._changed:
            self._changed.notify_all()

    def _take(self, lines: list[str]) -> None:
        with self._changed:
            for line in lines:
                # the guard keeps the regex off long lines (a 64 KiB client id in a
                # log line made its backtracking take minutes)
                match = READY.search(line) if " listening on " in line else None
                if match:
                    self._run_ports[match.group(1)] = int(match.group(2))
            self.lines.extend(lines)
            if self.log_path is not None and len(self.lines) > 2 * KEPT_LINES:
                del self.lines[:-KEPT_LINES]
            self._changed.notify_all()

    def _check_ready(self, expect: Iterable[str]) -> bool:
        """Whether every listener in ``expect`` is ready; raises if the server ended."""
        if set(expect) <= set(self._run_ports):
            return True
        self._check_alive(", ".join(sorted(set(expect) - set(self._run_ports))) + " listened")
        return False

    def _check_alive(self, waiting_for: str) -> None:
        """Raise :class:`ServerNotReady` once the server has exited (and its last
        lines are read)."""
        assert self.process is not None, "not launched"
        if self.process.poll() is not None and not (self._reader and self._reader.is_alive()):
            raise ServerNotReady(
                f"tidelog serve exited {self.process.returncode} before {waiting_for}:\n"
                + self.tail()
            )

    def _not_ready(self, expect: Iterable[str], timeout: float) -> ServerNotReady:
        self.kill()
        return ServerNotReady(
            f"no {', '.join(expect)} listener within {timeout:g} s:\n{self.tail()}"
        )

    def wait_ready(self, expect: Iterable[str], timeout: float = READY_TIMEOUT) -> None:
        """Block until every listener named in ``expect`` (``MQTT``, ``HTTP``,
        ``WebSocket``...) reported its port; the server is killed if it takes longer."""
        expect = tuple(expect)
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._check_ready(expect):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(min(left, 0.1))
            else:
                return
        raise self._not_ready(expect, timeout)  # outside the lock: kill() joins the reader

    async def until_ready(self, expect: Iterable[str], timeout: float = READY_TIMEOUT) -> None:
        """:meth:`wait_ready` for trio code (other tasks run meanwhile)."""
        expect = tuple(expect)
        with trio.move_on_after(timeout):
            while not self._check_ready(expect):
                await trio.sleep(0.02)
            return
        raise self._not_ready(expect, timeout)

    async def until_accepting(self, port: int, timeout: float = READY_TIMEOUT) -> None:
        """Wait until ``port`` on :data:`HOST` accepts a connection: readiness for a
        server that logs no ready line (``--log-level warning``, as the benchmarks
        run it); raises :class:`ServerNotReady` if the server exits first."""
        with trio.move_on_after(timeout):
            while True:
                try:
                    stream = await trio.open_tcp_stream(HOST, port)
                except OSError:
                    self._check_alive(f"port {port} accepted")
                    await trio.sleep(0.02)
                else:
                    await stream.aclose()
                    return
        raise self._not_ready((f"port {port}",), timeout)

    def wait_metric(self, pattern: str, timeout: float = 20) -> None:
        """Block until ``/metrics`` has a line matching ``pattern`` (a regular
        expression), e.g. ``tidelog_feeds 2(\\.0)?``: wait for the thing itself."""
        import httpx  # a dev dependency (tidelog itself does not need it)

        deadline = time.monotonic() + timeout
        line = re.compile(rf"^{pattern}$", re.M)
        while not line.search(httpx.get(f"{self.url}/metrics", timeout=5).text):
            assert time.monotonic() < deadline, f"no {pattern!r} in /metrics in {timeout} s"
            time.sleep(0.02)

    async def until_metric(self, pattern: str, timeout: float = 20) -> None:
        """:meth:`wait_metric` for trio code."""
        import httpx

        line = re.compile(rf"^{pattern}$", re.M)
        with trio.fail_after(timeout):
            async with httpx.AsyncClient(base_url=self.url, timeout=5) as client:
                while not line.search((await client.get("/metrics")).text):
                    await trio.sleep(0.02)

    def wait_feeds(self, count: int, timeout: float = 20) -> None:
        """Wait until the server has ``count`` open subscriber feeds: a stream or
        subscription has subscribed."""
        self.wait_metric(rf"tidelog_feeds {count}(\.0)?", timeout)

    # -- stopping ------------------------------------------------------------------------

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Send ``sig`` and wait for the exit status (blocking)."""
        assert self.process is not None, "not launched"
        started = time.monotonic()
        self.process.send_signal(sig)
        code = self.wait_exit(timeout)
        self.stop_seconds = time.monotonic() - started
        return code

    async def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, and the exit status; killed (-9) if it takes longer than ``timeout``."""
        assert self.process is not None, "not launched"
        self.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout):
            while self.process.poll() is None:
                await trio.sleep(0.05)
        if self.process.poll() is None:
            self.kill()
            return -9
        self._join()
        return self.process.returncode

    def wait_exit(self, timeout: float = 30) -> int:
        """The exit status, once the server has exited and its last lines are read."""
        assert self.process is not None, "not launched"
        code = self.process.wait(timeout)
        self._join()
        return code

    def kill(self) -> None:
        """SIGKILL, if it still runs."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()
        self._join()

    def _join(self) -> None:
        """Wait for the reader to take the last lines of an exited server."""
        if self._reader is not None and not self.running:
            self._reader.join(10)
            if self._own_log is not None and not self._reader.is_alive():
                self._own_log.unlink(missing_ok=True)  # its lines are in self.lines
                self._own_log = None


class HarnessServer(ServerProcess):
    """The server the harnesses load: ``tidelog serve`` on ``storage`` with its MQTT
    and HTTP listeners on :data:`HOST` (no WebSocket, no TLS), stderr appended to
    ``log_path``; :meth:`start` again after a kill restarts it on the same data."""

    def __init__(self, storage: str, log_path: Path, *, nofile: int | None = None) -> None:
        super().__init__(
            *("--storage", storage, "--bind", HOST, "--ws-port", "off", "--mqtt-tls-port", "off"),
            log_path=log_path,
            nofile=nofile,
        )

    async def start(
        self, mqtt_port: int = 0, http_port: int = 0, timeout: float = READY_TIMEOUT
    ) -> None:
        """Start on these ports (0: any) and wait for both listeners' ready lines."""
        self.launch("--mqtt-port", str(mqtt_port), "--http-port", str(http_port))
        await self.until_ready(("MQTT", "HTTP"), timeout)
