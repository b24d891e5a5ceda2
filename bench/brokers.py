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
* ``nats``: Debian's nats-server 2 with its MQTT listener. MQTT in NATS needs
  JetStream (sessions, QoS 1 messages and retained messages live in JetStream
  streams) and a ``server_name``; the generated config puts the JetStream file
  store in the scratch directory. JetStream writes to its files without an
  fsync per message (it syncs on an interval), so a QoS 1 PUBACK is not a
  promise that the message is on disk. MQTT 3.1.1 only, QoS 0 and 1 only: the
  runner skips (and says so) scenarios that need MQTT 5 or QoS 2.
* ``amqtt``: the amqtt 0.12.1 broker (pure Python, asyncio) from its own
  virtualenv (see :class:`Amqtt` for where it is looked for), only the
  anonymous-auth plugin loaded. MQTT 3.1.1 only. It is slow, so its runs are
  capped (:attr:`Peer.work_cap`) and the table says by how much.
* ``tidelog``: ``python -m tidelog serve`` from this checkout, LMDB in a
  temporary directory (SQLite when the checkout has no LMDB backend or the
  lmdb module is missing) with ``fsync=always``: every acknowledged message is
  on disk. ``--log-level warning``, as mosquitto logs errors and warnings only
  (tidelog's default, info, writes a line per connection).
* ``tidelog-fsync-never``: the same with ``fsync=never`` (the latency targets
  of issue 12 with the disk out of the path). Not in the default set: runners
  take it when named (``--brokers ...,tidelog-fsync-never``).

Every broker inherits the runner's file descriptor limit; the runners raise
their soft ``RLIMIT_NOFILE`` to the hard limit (``bench.process_stats.raise_fd_limit``) before
starting brokers, so 10,000 idle connections fit on both sides.
"""

from __future__ import annotations

import abc
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import attrs
import trio

from tidelog.testing.server import ServerNotReady, ServerProcess

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
        ready = False
        with trio.move_on_after(READY_TIMEOUT):
            while not await _accepts(HOST, port):
                if process.returncode is not None:
                    raise PeerError(
                        f"{name} exited with status {process.returncode} before accepting on "
                        f"port {port}:\n{_tail(log_path)}"
                    )
                await trio.sleep(0.02)
            ready = True
        if not ready:
            raise PeerError(
                f"{name} did not accept connections on {HOST}:{port} within {READY_TIMEOUT:g} s"
                f"{not_ready_hint}:\n{_tail(log_path)}"
            )
        # the timeout covers starting only: the measurement runs as long as it takes
        yield RunningBroker(name, HOST, port, process.pid, settings)
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)


class Peer(abc.ABC):
    """A broker the benchmarks can start.

    ``protocol_levels`` and ``max_qos`` say what it speaks: :meth:`cannot` turns
    them into a reason to skip a scenario. ``work_cap`` (None: no cap) bounds the
    messages one run handles, counted as published messages times
    max(1, subscribers), for a broker too slow for the full counts;
    ``connection_cap`` bounds the idle connections it is asked to hold. Quick
    (smoke) runs use a tenth of both caps.
    """

    name: str
    description: str
    protocol_levels: tuple[int, ...] = (4, 5)
    max_qos: int = 2
    work_cap: int | None = None
    connection_cap: int | None = None
    in_default_set = True
    """Run when no brokers are named (variants of another peer are not)."""

    def cannot(self, *, level: int, qos: int) -> str | None:
        """Why this broker cannot run a scenario at protocol ``level`` needing ``qos``."""
        if level not in self.protocol_levels:
            spoken = ", ".join("3.1.1" if lv == 4 else "5" for lv in self.protocol_levels)
            return f"{self.name} speaks MQTT {spoken} only"
        if qos > self.max_qos:
            return f"{self.name} supports QoS 0..{self.max_qos} only (scenario needs QoS {qos})"
        return None

    @abc.abstractmethod
    def unavailable(self) -> str | None:
        """Why this broker cannot run here (what to install), or None."""

    @abc.abstractmethod
    def start(self, workdir: Path) -> AbstractAsyncContextManager[RunningBroker]:
        """Start a fresh broker in ``workdir``; an async context manager of RunningBroker."""

    def version(self) -> str:
        return ""

    def cached_version(self) -> str:
        """:meth:`version`, asked once per process (amqtt's takes half a second)."""
        cached: str | None = getattr(self, "_version", None)
        if cached is None:
            cached = self._version = self.version()
        return cached


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
            "max_connections -1",
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
    """``python -m tidelog serve`` from a checkout (default: this one), MQTT only,
    fsync always, started by the launcher the tests use
    (:class:`tidelog.testing.server.ServerProcess`), ready once its port accepts.
    Another ``checkout`` (a ``git worktree`` or ``git archive`` of older code)
    measures a change against its baseline in one run."""

    description = "tidelog serve, fsync=always, LMDB in a temp dir (SQLite if no LMDB backend)"

    def __init__(
        self,
        checkout: Path = REPO,
        name: str = "tidelog",
        *,
        fsync: str = "always",
        settings: Sequence[str] = (),
    ) -> None:
        self.checkout = checkout
        self.name = name
        self.fsync = fsync
        self.settings = list(settings)
        """``SECTION.NAME=VALUE`` options passed with ``--set`` (a variant for an A/B)."""
        self.in_default_set = fsync == "always" and name == "tidelog"
        if fsync != "always":
            self.description = self.description.replace("fsync=always", f"fsync={fsync}")
        if settings:
            self.description += ", " + ", ".join(settings)

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
            return f"lmdb://{workdir}/log?fsync={self.fsync}"
        return f"sqlite://{workdir}/log.db?fsync={self.fsync}"

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
            ["git", "-C", str(self.checkout), "describe", "--always", "--dirty"],
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
        url = self.storage_url(workdir)
        port = free_port()  # at --log-level warning there is no ready line to read it from
        server = ServerProcess(
            *("--storage", url, "--bind", HOST, "--mqtt-port", str(port)),
            *("--ws-port", "off", "--http-port", "off", "--log-level", "warning"),
            *(arg for setting in self.settings for arg in ("--set", setting)),
            cwd=workdir,
            log_path=workdir / f"{self.name}.log",
            checkout=self.checkout,
        )
        server.launch()
        try:
            try:
                await server.until_accepting(port, READY_TIMEOUT)
            except ServerNotReady as exc:
                hint = "(does this tidelog have an MQTT listener?)"
                raise PeerError(f"{self.name}: {exc} {hint}") from None
            settings = " ".join([f"--storage {url} --log-level warning", *self.settings])
            # the timeout covers starting only: the measurement runs as long as it takes
            yield RunningBroker(self.name, HOST, port, server.pid, settings)
        finally:
            with trio.CancelScope(shield=True):
                await server.terminate(STOP_TIMEOUT)


def _first_line(argv: Sequence[str]) -> str:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else ""


class Nats(Peer):
    """nats-server with MQTT on and a JetStream file store in the scratch directory."""

    name = "nats"
    description = "nats-server 2, MQTT listener, JetStream file store (no fsync per message)"
    protocol_levels = (4,)
    max_qos = 1

    def binary(self) -> str | None:
        found = shutil.which("nats-server")
        if found:
            return found
        return "/usr/bin/nats-server" if Path("/usr/bin/nats-server").exists() else None

    def unavailable(self) -> str | None:
        if self.binary() is None:
            return "the nats-server binary is missing (apt-get install nats-server)"
        return None

    def version(self) -> str:
        binary = self.binary()
        return _first_line([binary, "--version"]) if binary else ""

    def config(self, workdir: Path, client_port: int, mqtt_port: int) -> str:
        return (
            "server_name: tidelog_bench\n"
            f"listen: {HOST}:{client_port}\n"
            "jetstream {\n"
            f'  store_dir: "{workdir / "jetstream"}"\n'
            "}\n"
            "mqtt {\n"
            f"  listen: {HOST}:{mqtt_port}\n"
            "}\n"
        )

    @asynccontextmanager
    async def start(self, workdir: Path) -> AsyncIterator[RunningBroker]:
        binary = self.binary()
        if binary is None:
            raise PeerError(f"{self.name}: {self.unavailable()}")
        client_port = free_port()
        port = free_port()
        config = workdir / "nats.conf"
        config.write_text(self.config(workdir, client_port, port))
        async with spawn(
            self.name,
            [binary, "-c", str(config)],
            workdir,
            port,
            settings=f"MQTT on {port}, JetStream store_dir {workdir / 'jetstream'}",
        ) as running:
            yield running


AMQTT_ENV = "TIDELOG_BENCH_AMQTT"
"""Environment variable: the amqtt binary, or the virtualenv holding it."""
AMQTT_VENVS = (REPO / ".bench-venv" / "amqtt", Path("/tmp/amqtt-venv"))
"""Where amqtt is looked for when TIDELOG_BENCH_AMQTT is unset, in order."""
AMQTT_INSTALL = (
    "python3 -m venv .bench-venv/amqtt && .bench-venv/amqtt/bin/pip install amqtt==0.12.1 "
    f"(from the repository root), or set {AMQTT_ENV} to an amqtt binary or its virtualenv"
)


class Amqtt(Peer):
    """The amqtt broker (pure Python, asyncio) from its own virtualenv.

    Looked for at ``$TIDELOG_BENCH_AMQTT`` (the ``amqtt`` binary or a virtualenv
    directory), else ``.bench-venv/amqtt`` in the repository (gitignored), else
    ``/tmp/amqtt-venv``. Its runs are capped at :attr:`work_cap` messages
    (published x max(1, subscribers)) and :attr:`connection_cap` idle connections.
    """

    name = "amqtt"
    description = "amqtt 0.12.1 (asyncio), anonymous auth plugin only, in-memory"
    protocol_levels = (4,)
    max_qos = 2
    work_cap = 10_000
    connection_cap = 2_000

    def binary(self) -> Path | None:
        configured = os.environ.get(AMQTT_ENV)
        candidates = [Path(configured)] if configured else list(AMQTT_VENVS)
        for candidate in candidates:
            binary = candidate / "bin" / "amqtt" if candidate.is_dir() else candidate
            if binary.is_file() and os.access(binary, os.X_OK):
                return binary
        return None

    def unavailable(self) -> str | None:
        if self.binary() is None:
            where = os.environ.get(AMQTT_ENV) or " or ".join(str(v) for v in AMQTT_VENVS)
            return f"amqtt is not installed at {where}: {AMQTT_INSTALL}"
        return None

    def version(self) -> str:
        binary = self.binary()
        return f"amqtt {_first_line([str(binary), '--version'])}" if binary else ""

    def config(self, port: int) -> str:
        return (
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: {HOST}:{port}\n"
            "    max_connections: -1\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )

    @asynccontextmanager
    async def start(self, workdir: Path) -> AsyncIterator[RunningBroker]:
        binary = self.binary()
        if binary is None:
            raise PeerError(f"{self.name}: {self.unavailable()}")
        port = free_port()
        config = workdir / "amqtt.yaml"
        config.write_text(self.config(port))
        async with spawn(
            self.name,
            [str(binary), "-c", str(config)],
            workdir,
            port,
            settings=f"listener {HOST}:{port}, anonymous",
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
        Nats(),
        Amqtt(),
        Tidelog(),
        Tidelog(name="tidelog-fsync-never", fsync="never"),
    )
}
"""Every broker by name, in the order tables list them."""
DEFAULT_PEERS = [name for name, peer in PEERS.items() if peer.in_default_set]
"""The brokers runners use when none are named."""
