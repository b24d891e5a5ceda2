"""Brokers the MQTT benchmarks run against, each started fresh per measurement.

A :class:`Peer` knows how to check it can run here (:meth:`Peer.unavailable`,
a reason or None) and how to start one broker process on a free port of
127.0.0.1 in a scratch directory (:meth:`Peer.start`, an async context manager
yielding a :class:`RunningBroker` once the port accepts connections, and
stopping the process on exit). :data:`PEERS` lists them by name; a new peer
(nats-server, amqtt) is one more subclass and one more entry.

Settings used (reported by the runner):

* ``mosquitto``: Debian's mosquitto 2 with its defaults (``max_queued_messages
  1000`` and ``max_inflight_messages 20`` per client: QoS 1 messages beyond the
  queue are dropped), ``persistence false``.
* ``mosquitto-unlimited``: the same with ``max_queued_messages 0`` and
  ``max_inflight_messages 0`` (no caps), so it loses nothing under load.
  mosquitto's persistence is a periodic snapshot of memory
  (``autosave_interval``), never an fsync per message, so it is off in both:
  turning it on changes nothing on the measured path.
* ``tidelog``: ``python -m tidelog serve`` from this checkout, LMDB in a
  temporary directory (SQLite when the checkout has no LMDB backend or the
  lmdb module is missing) with ``fsync=always``: every acknowledged message is
  on disk.
"""

from __future__ import annotations

import abc
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import attrs
import trio

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 20.0
"""Seconds a broker gets to accept connections after it is started."""
STOP_TIMEOUT = 10.0
"""Seconds a broker gets to exit after SIGTERM before it is killed."""


class PeerError(Exception):
    """A broker cannot run here, or failed to start."""


@attrs.frozen
class RunningBroker:
    name: str
    host: str
    port: int
    pid: int
    settings: str


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (the broker binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


async def _accepts(host: str, port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream(host, port)
    except OSError:
        return False
    await stream.aclose()
    return True


async def _stop(process: trio.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_TIMEOUT):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


@asynccontextmanager
async def spawn(
    name: str,
    argv: Sequence[str],
    workdir: Path,
    port: int,
    *,
    env: dict[str, str] | None = None,
    settings: str = "",
    not_ready_hint: str = "",
) -> AsyncIterator[RunningBroker]:
    """Run ``argv`` with its output in ``workdir/<name>.log`` until the block exits.

    Yields once ``port`` accepts a connection; raises :class:`PeerError` (with
    the end of the log) if the process exits or the port stays closed for
    :data:`READY_TIMEOUT` seconds. On exit: SIGTERM, then SIGKILL after
    :data:`STOP_TIMEOUT` seconds.
    """
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
        )
    try:
        with trio.move_on_after(READY_TIMEOUT):
            while not await _accepts(HOST, port):
                if process.returncode is not None:
                    raise PeerError(
                        f"{name} exited with status {process.returncode} before accepting on "
                        f"port {port}:\n{_tail(log_path)}"
                    )
                await trio.sleep(0.02)
            yield RunningBroker(name, HOST, port, process.pid, settings)
            return
        raise PeerError(
            f"{name} did not accept connections on {HOST}:{port} within {READY_TIMEOUT:g} s"
            f"{not_ready_hint}:\n{_tail(log_path)}"
        )
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)


class Peer(abc.ABC):
    """A broker the benchmarks can start."""

    name: str
    description: str

    @abc.abstractmethod
    def unavailable(self) -> str | None:
        """Why this broker cannot run here (what to install), or None."""

    @abc.abstractmethod
    def start(self, workdir: Path) -> AbstractAsyncContextManager[RunningBroker]:
        """Start a fresh broker in ``workdir``; an async context manager of RunningBroker."""

    def version(self) -> str:
        return ""


class Mosquitto(Peer):
    """Debian's mosquitto 2, with a generated configuration file."""

    def __init__(self, name: str, description: str, options: dict[str, str]) -> None:
        self.name = name
        self.description = description
        self.options = {"persistence": "false", "set_tcp_nodelay": "true", **options}

    def binary(self) -> str | None:
        return shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )

    def unavailable(self) -> str | None:
        if self.binary() is None:
            return "the mosquitto binary is missing (apt-get install mosquitto)"
        return None

    def version(self) -> str:
        binary = self.binary()
        if binary is None:
            return ""
        output = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False).stdout
        return output.splitlines()[0] if output else ""

    def config(self, port: int) -> str:
        lines = [
            f"listener {port} {HOST}",
            "allow_anonymous true",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            *(f"{key} {value}" for key, value in self.options.items()),
        ]
        return "\n".join(lines) + "\n"

    @asynccontextmanager
    async def start(self, workdir: Path) -> AsyncIterator[RunningBroker]:
        binary = self.binary()
        if binary is None:
            raise PeerError(f"{self.name}: {self.unavailable()}")
        port = free_port()
        config = workdir / f"{self.name}.conf"
        config.write_text(self.config(port))
        settings = ", ".join(f"{key} {value}" for key, value in self.options.items())
        async with spawn(
            self.name, [binary, "-c", str(config)], workdir, port, settings=settings
        ) as running:
            yield running


class Tidelog(Peer):
    """``python -m tidelog serve`` from this checkout, MQTT only, fsync always."""

    name = "tidelog"
    description = "tidelog serve, fsync=always, LMDB in a temp dir (SQLite if no LMDB backend)"

    def storage_scheme(self) -> str:
        """``lmdb`` when this checkout has the LMDB backend and the lmdb module, else ``sqlite``."""
        from tidelog import storage

        backends: dict[str, str] = getattr(storage, "_BACKENDS", {})
        module = backends.get("lmdb", "tidelog.storage.lmdb_log:").partition(":")[0]
        try:
            has_lmdb = all(importlib.util.find_spec(name) for name in (module, "lmdb"))
        except ModuleNotFoundError:
            has_lmdb = False
        return "lmdb" if has_lmdb else "sqlite"

    def storage_url(self, workdir: Path) -> str:
        if self.storage_scheme() == "lmdb":
            return f"lmdb://{workdir}/log?fsync=always"
        return f"sqlite://{workdir}/log.db?fsync=always"

    def unavailable(self) -> str | None:
        try:
            from tidelog import server
        except ImportError as exc:
            return f"tidelog cannot be imported from {REPO}: {exc}"
        listeners = getattr(server, "LISTENERS", None)
        if listeners is not None and not any(
            getattr(spec, "port_field", None) == "mqtt_port" for spec in listeners
        ):
            return (
                "this tidelog has no MQTT listener yet (tidelog.server.LISTENERS has no "
                "entry for --mqtt-port; the MQTT server is still being built): "
                "run with --brokers mosquitto,mosquitto-unlimited until it lands"
            )
        return None

    def version(self) -> str:
        result = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        )
        commit = result.stdout.strip() if result.returncode == 0 else "?"
        return f"tidelog {commit}, storage {self.storage_scheme()}"

    @asynccontextmanager
    async def start(self, workdir: Path) -> AsyncIterator[RunningBroker]:
        reason = self.unavailable()
        if reason:
            raise PeerError(f"tidelog: {reason}")
        port = free_port()
        url = self.storage_url(workdir)
        argv = [
            sys.executable,
            "-m",
            "tidelog",
            "serve",
            "--storage",
            url,
            "--bind",
            HOST,
            "--mqtt-port",
            str(port),
            "--ws-port",
            "off",
            "--http-port",
            "off",
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        async with spawn(
            self.name,
            argv,
            workdir,
            port,
            env=env,
            settings=f"--storage {url}",
            not_ready_hint=" (does this tidelog have an MQTT listener?)",
        ) as running:
            yield running


PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Mosquitto("mosquitto", "mosquitto 2, defaults (queue cap 1000, 20 in flight)", {}),
        Mosquitto(
            "mosquitto-unlimited",
            "mosquitto 2, max_queued_messages 0, max_inflight_messages 0",
            {"max_queued_messages": "0", "max_inflight_messages": "0"},
        ),
        Tidelog(),
    )
}
"""Every broker by name, in the order tables list them."""
