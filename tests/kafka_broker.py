"""Real Apache Kafka brokers in KRaft mode on 127.0.0.1, for tests and benchmarks.

The jars come from Maven Central (``scripts/kafka/fetch.sh``, run by
``scripts/test.sh``, into ``scripts/kafka/lib``). :class:`KafkaCluster` writes
one ``server.properties`` per broker into a temporary directory, formats the
KRaft storage and starts one JVM per broker (each broker is also a controller
voter), then waits until a client sees every broker. ``stop_broker`` and
``start_broker`` let fault tests SIGKILL and restart single brokers.

``python -m tests.kafka_broker [--brokers N]`` runs a cluster until Ctrl-C and
prints its bootstrap address (for benchmarks and trying things by hand).
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "scripts" / "kafka" / "lib"
FETCH = ROOT / "scripts" / "kafka" / "fetch.sh"
START_TIMEOUT = 120.0
KAFKA_GC = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
)
"""The JVM GC options of Kafka's ``bin/kafka-run-class.sh``."""


class KafkaUnavailableError(RuntimeError):
    """Kafka could not be fetched or started (tests that need it fail with this)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_jars() -> Path:
    """The directory of Kafka's jars, fetching them with Maven if they are missing."""
    if not (LIB / ".complete").exists():
        if shutil.which("mvn") is None:
            raise KafkaUnavailableError("Maven (mvn) is not installed: cannot fetch Kafka")
        result = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True)
        if result.returncode != 0:
            raise KafkaUnavailableError(f"fetching Kafka failed:\n{result.stdout}{result.stderr}")
    return LIB


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise KafkaUnavailableError("Java is not installed: cannot run Kafka")
    return java


class KafkaCluster:
    """``brokers`` combined broker/controller KRaft nodes in ``directory``."""

    def __init__(
        self,
        directory: Path,
        brokers: int = 1,
        heap_mb: int = 384,
        *,
        kafka_gc: bool = False,
    ) -> None:
        self.directory = directory
        self.count = brokers
        self.heap_mb = heap_mb
        self.kafka_gc = kafka_gc
        """True: the garbage collector Kafka's own start scripts set (G1, 20 ms pause
        target, the heap reserved at start), for benchmarks of latency; False: a
        small serial-GC JVM that starts quickly, for tests."""
        self.ports = [free_port() for _ in range(brokers)]
        self.controller_ports = [free_port() for _ in range(brokers)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

    @property
    def bootstrap(self) -> str:
        """``host:port,...`` of every broker (what a ``kafka://`` URL names)."""
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def url(self, log_name: str, **options: object) -> str:
        """A ``kafka://`` storage URL for a log on this cluster."""
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"kafka://{self.bootstrap}/{log_name}" + (f"?{query}" if query else "")

    def _properties(self, index: int) -> Path:
        node = index + 1
        voters = ",".join(
            f"{i + 1}@127.0.0.1:{port}" for i, port in enumerate(self.controller_ports)
        )
        replication = min(3, self.count)
        config = {
            "process.roles": "broker,controller",
            "node.id": node,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.ports[index]},"
            f"CONTROLLER://127.0.0.1:{self.controller_ports[index]}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.ports[index]}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": self.directory / f"broker-{node}" / "data",
            "num.partitions": 1,
            "auto.create.topics.enable": "false",
            "unclean.leader.election.enable": "false",
            "offsets.topic.replication.factor": replication,
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": max(1, replication - 1),
            "group.initial.rebalance.delay.ms": 0,
            "message.max.bytes": 20 * 1024 * 1024,
            "replica.fetch.max.bytes": 20 * 1024 * 1024,
            "log.cleaner.backoff.ms": 1000,
            "log.retention.check.interval.ms": 5000,
            "num.network.threads": 2,
            "num.io.threads": 2,
            "background.threads": 2,
            "log.cleaner.threads": 1,
        }
        path = self.directory / f"broker-{node}" / "server.properties"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{key}={value}\n" for key, value in config.items()))
        return path

    def _java_command(self, main: str, *args: str) -> list[str]:
        return [
            _java(),
            f"-Xmx{self.heap_mb}m",
            f"-Xms{self.heap_mb if self.kafka_gc else min(self.heap_mb, 128)}m",
            *(KAFKA_GC if self.kafka_gc else ("-XX:+UseSerialGC",)),
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            "-cp",
            f"{ensure_jars()}/*",
            main,
            *args,
        ]

    def start(self) -> KafkaCluster:
        """Format and start every broker, then wait until all are reachable."""
        for index in range(self.count):
            properties = self._properties(index)
            result = subprocess.run(
                self._java_command(
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    self.cluster_id,
                    "-c",
                    str(properties),
                ),
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise KafkaUnavailableError(
                    f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}"
                )
        for index in range(self.count):
            self.start_broker(index, wait=False)
        self.wait_ready()
        return self

    def start_broker(self, index: int, *, wait: bool = True) -> None:
        """Start (or restart) broker ``index`` (0-based)."""
        node = index + 1
        properties = self.directory / f"broker-{node}" / "server.properties"
        output = open(self.directory / f"broker-{node}" / "kafka.log", "ab")  # noqa: SIM115
        self.processes[index] = subprocess.Popen(
            self._java_command("kafka.Kafka", str(properties)),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        output.close()
        if wait:
            self.wait_ready([index])

    def stop_broker(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Stop broker ``index`` (SIGKILL by default: a crash) and wait for it to exit."""
        process = self.processes.pop(index, None)
        if process is not None and process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def wait_ready(self, indexes: list[int] | None = None) -> None:
        """Wait until the given brokers (all by default) answer metadata requests."""
        from confluent_kafka.admin import AdminClient

        indexes = list(range(self.count)) if indexes is None else indexes
        deadline = time.monotonic() + START_TIMEOUT
        for index in indexes:
            admin = AdminClient(
                {"bootstrap.servers": f"127.0.0.1:{self.ports[index]}", "log_level": 0}
            )
            while True:
                process = self.processes.get(index)
                if process is None or process.poll() is not None:
                    raise KafkaUnavailableError(
                        f"Kafka broker {index + 1} exited:\n{self.log_tail(index)}"
                    )
                try:
                    metadata = admin.list_topics(timeout=2)
                    if metadata.controller_id >= 0 and len(metadata.brokers) >= 1:
                        break
                except Exception:  # not up yet
                    pass
                if time.monotonic() > deadline:
                    raise KafkaUnavailableError(
                        f"Kafka broker {index + 1} not ready after {START_TIMEOUT:.0f} s:\n"
                        + self.log_tail(index)
                    )
                time.sleep(0.5)

    def log_tail(self, index: int, lines: int = 40) -> str:
        path = self.directory / f"broker-{index + 1}" / "kafka.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop every broker (SIGTERM, then SIGKILL after 20 s)."""
        for index in list(self.processes):
            self.stop_broker(index, signal.SIGTERM)


def main() -> None:
    brokers = int(sys.argv[sys.argv.index("--brokers") + 1]) if "--brokers" in sys.argv else 1
    directory = Path(tempfile.mkdtemp(prefix="tidelog-kafka-"))
    # blocked, so they wait for sigwait instead of killing this process and
    # leaving the brokers' JVMs running
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    cluster = KafkaCluster(directory, brokers).start()
    print(cluster.bootstrap, flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
        os._exit(0)


if __name__ == "__main__":
    main()
