"""Mesh test harness: ``tidelog serve`` nodes on 127.0.0.1 with temporary data
directories, each link through a :class:`FaultProxy`, and the invariant check.

The invariant (issue 13), checked on every node: for every origin, the events
appended are the origin's events that match, in order, none missing, none twice.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.serve_process import Serve
from tidelog.storage import Event, open_log
from tidelog.topics import topic_matches


class FaultProxy:
    """A TCP proxy on 127.0.0.1 between a link's dialer and the remote's MQTT port.

    ``mode``: ``pass`` forwards; ``blackhole`` keeps connections open and forwards
    nothing (a dead network path); ``drop`` closes every connection and refuses new
    ones. ``delay`` (seconds) holds every chunk that long.
    """

    def __init__(self) -> None:
        self.target: int | None = None
        self.mode = "pass"
        self.delay = 0.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.mode == "drop" or self.target is None:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self.delay:
                    time.sleep(self.delay)
                while self.mode == "blackhole":
                    time.sleep(0.01)  # hold the data: nothing gets through
                if self.mode == "drop":
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        """Drop every connection now and refuse new ones until :meth:`restore`."""
        self.mode = "drop"
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self.mode = "pass"

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


class Node:
    """One ``tidelog serve`` with a ``[node] id`` and its ``[[link]]`` tables."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.links: list[dict[str, Any]] = []
        self.proxies: dict[str, FaultProxy] = {}
        self.serve: Serve | None = None
        self.published: list[tuple[str, bytes]] = []
        self.extra_config = ""
        """TOML added to the node's configuration file (e.g. a ``[security]`` table)."""
        self.inbound: list[FaultProxy] = []
        """Proxies in front of this node's MQTT port (links other nodes dial)."""

    @property
    def storage(self) -> str:
        return f"lmdb://{self.dir / 'data'}"

    def link(self, remote: Node, **table: Any) -> FaultProxy:
        """Add a ``[[link]]`` to ``remote`` through a new fault proxy."""
        proxy = FaultProxy()
        self.proxies[remote.name] = proxy
        remote.inbound.append(proxy)
        self.links.append({"name": remote.name, "url": proxy.url, **table})
        return proxy

    def _config(self) -> str:
        lines = [self.extra_config, "[node]", f'id = "{self.name}"', ""]
        for link in self.links:
            lines.append("[[link]]")
            for key, value in link.items():
                if isinstance(value, bool):
                    lines.append(f"{key} = {'true' if value else 'false'}")
                elif isinstance(value, str):
                    lines.append(f'{key} = "{value}"')
                elif isinstance(value, list | tuple):
                    lines.append(f"{key} = [{', '.join(repr(v) for v in value)}]".replace("'", '"'))
                else:
                    lines.append(f"{key} = {value}")
            lines.append("")
        return "\n".join(lines)

    def start(self) -> None:
        start_all([self])

    def launch(self) -> None:
        """Start ``tidelog serve`` without waiting for it (see :func:`start_all`)."""
        config = self.dir / "tidelog.toml"
        config.write_text(self._config())
        self.serve = Serve(
            self.dir,
            "--config",
            str(config),
            "--storage",
            self.storage,
            "--mqtt-port",
            "0",
            "--http-port",
            "0",
            "--ws-port",
            "off",
        )

    def ready(self) -> bool:
        """True once both listeners are up (then the proxies in front of it forward)."""
        assert self.serve is not None
        if self.serve.process.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n{self.serve.output}")
        if not {"MQTT", "HTTP"} <= set(self.serve.ports):
            return False
        for proxy in self.inbound:
            proxy.target = self.serve.ports["MQTT"]
        return True

    def stop(self) -> None:
        assert self.serve is not None
        assert self.serve.stop() == 0, self.serve.output
        self.serve = None

    def kill(self) -> None:
        assert self.serve is not None
        self.serve.kill()
        self.serve = None

    @property
    def url(self) -> str:
        assert self.serve is not None
        return self.serve.url

    def publish(self, events: Sequence[tuple[str, bytes]]) -> None:
        """Publish a batch here (one durable commit)."""
        body = {
            "events": [
                {"topic": t, "payload": p.decode(), "encoding": "text", "qos": 1} for t, p in events
            ]
        }
        response = httpx.post(f"{self.url}/v1/events", json=body, timeout=30)
        assert response.status_code == 201, response.text
        self.published += events

    def head(self) -> int:
        stats = httpx.get(f"{self.url}/v1/stats", timeout=10).json()
        return int(stats["state"]["next_offset"])

    def links_status(self) -> dict[str, dict[str, Any]]:
        body = httpx.get(f"{self.url}/v1/links", timeout=10).json()
        return {link["name"]: link for link in body["links"]}

    def events(self) -> list[Event]:
        """Every event of the log (the server must be stopped)."""

        async def read() -> list[Event]:
            out: list[Event] = []
            async with open_log(self.storage) as log:
                state = await log.state()
                position = state.first_offset
                while position < state.next_offset:
                    result = await log.read(position, limit=10_000)
                    out += result.events
                    position = result.next_offset
            return out

        return trio.run(read)


def start_all(nodes: Iterable[Node], timeout: float = 90) -> None:
    """Start every node at once and wait until all are ready (starting one after the
    other costs seconds each on a loaded machine)."""
    nodes = list(nodes)
    for node in nodes:
        node.launch()
    wait_for(lambda: all([node.ready() for node in nodes]), timeout, "nodes ready")


def wait_for(condition: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    """Poll ``condition`` until true (the thing itself, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.05)


def wait_heads(expected: dict[Node, int], timeout: float = 90) -> None:
    wait_for(
        lambda: all(node.head() >= count for node, count in expected.items()),
        timeout,
        f"heads {[(n.name, c) for n, c in expected.items()]}",
    )


def origin_of(event: Event, here: str) -> tuple[str, int]:
    provenance = event.provenance
    if provenance is None or provenance.origin_node is None:
        return here, event.offset
    assert provenance.origin_offset is not None
    return provenance.origin_node, provenance.origin_offset


def check_invariant(
    logs: dict[str, list[Event]], wants: Callable[[str, str], Iterable[str]]
) -> None:
    """On every node, per origin: the origin's local events matching ``wants(node,
    origin)`` (filters), in order, none missing, none twice."""
    local = {
        name: [e for e in events if origin_of(e, name)[0] == name] for name, events in logs.items()
    }
    for node, events in logs.items():
        for origin, origin_events in local.items():
            if origin == node:
                continue
            filters = list(wants(node, origin))
            expected = [
                (e.offset, e.topic, e.payload)
                for e in origin_events
                if any(topic_matches(f, e.topic) for f in filters)
            ]
            got = [
                (origin_of(e, node)[1], e.topic, e.payload)
                for e in events
                if origin_of(e, node)[0] == origin
            ]
            assert got == expected, (
                f"{node} from {origin}: {len(got)} events, expected {len(expected)}; "
                f"first difference at {_first_difference(got, expected)}"
            )


def _first_difference(a: list[Any], b: list[Any]) -> Any:
    for index, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return index, x, y
    return min(len(a), len(b))
