"""Coverage-guided fuzzing (atheris) of the MQTT decoder and connection state machine.

    python -m tests.protocols.mqtt.fuzz_targets decoder    CORPUS_DIR -max_total_time=3600
    python -m tests.protocols.mqtt.fuzz_targets connection CORPUS_DIR -max_total_time=3600
    python -m tests.protocols.mqtt.fuzz_targets corpus     CORPUS_DIR  # the seed corpus only

Arguments after the target name go to libFuzzer as they are (``-max_total_time``,
``-runs``, ``-jobs``...). The seed corpus (valid packets of every type and
protocol level, encoded by tidelog's own codec, and whole client sessions) is
written to the corpus directory first. ``tests/protocols/mqtt/test_atheris.py``
runs each target for a few seconds in CI; a crash is a file ``crash-<sha1>``
that reproduces with ``python -m tests.protocols.mqtt.fuzz_targets <target> crash-<sha1>`` and
becomes a regression test.

Targets
-------
``decoder``: the first byte picks the decoder (a server learning the level from
CONNECT, a server or a client at level 3, 4 or 5) and how the rest is cut into
reads. Only :class:`MQTTProtocolError` may come out; every packet it accepts
must encode again, and decode back to an equal packet.

``connection``: the bytes are what a client sends to a live
:class:`~tidelog.protocols.mqtt.connection.MQTTConnection` (in-process, over a
memory stream, on a ``memory://`` broker running in a background thread). The
connection must finish within a few seconds of the client's EOF, log no
unexpected error, and send only packets that a client-side decoder accepts.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from pathlib import Path
from typing import Any

import atheris

with atheris.instrument_imports(include=["tidelog"]):
    import trio
    import trio.testing

    import tidelog
    from tidelog.protocols.mqtt import (
        Connect,
        Decoder,
        MQTTProtocolError,
        Packet,
        Role,
        encode,
        error_reply,
    )
    from tidelog.protocols.mqtt.connection import MQTTConnection
    from tidelog.protocols.mqtt.server import MQTTServer
    from tidelog.protocols.mqtt.settings import MQTTSettings
    from tidelog.security import Security

from tests.protocols.mqtt.corpus import LEVELS, write_corpus

DECODERS: list[tuple[int | None, Role]] = [
    (None, Role.SERVER),
    *((level, Role.SERVER) for level in LEVELS),
    *((level, Role.CLIENT) for level in LEVELS),
]


# -- the decoder target ------------------------------------------------------------------


def _chunks(data: bytes, cut: int) -> list[bytes]:
    """Cut ``data`` into reads: whole, byte by byte, or in pieces of ``cut``."""
    if cut == 0:
        return [data]
    size = max(1, cut)
    return [data[i : i + size] for i in range(0, len(data), size)]


def fuzz_decoder(data: bytes) -> None:
    if len(data) < 2:
        return
    level, role = DECODERS[data[0] % len(DECODERS)]
    cut = data[1] % 8
    limit = 16 * 1024 * 1024 if data[1] < 128 else 2 + (data[1] - 128) * 32
    decoder = Decoder(level, role=role, max_packet_size=limit)
    received: list[Packet] = []
    try:
        for chunk in _chunks(data[2:], cut):
            received.extend(decoder.feed(chunk))
    except MQTTProtocolError as exc:
        received.extend(exc.packets)
        error_reply(exc)
    effective = decoder.protocol_level
    if effective is None:
        return
    for packet in received:
        if isinstance(packet, Connect):
            effective = packet.protocol_level
        encoded = encode(packet, effective)
        again = Decoder(effective, role=role)
        if isinstance(packet, Connect):
            again = Decoder(role=role)
        decoded = again.feed(encoded)
        if decoded != [packet]:
            raise AssertionError(f"{packet!r} encodes to {encoded!r}, which decodes to {decoded!r}")


# -- the connection target ---------------------------------------------------------------


class _Errors(logging.Handler):
    """Collects ERROR records (``MQTTConnection.run`` logs unexpected exceptions so)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class LiveBroker:
    """A ``memory://`` broker and its MQTT server in a background trio thread."""

    def __init__(self, settings: MQTTSettings | None = None) -> None:
        self.settings = settings or MQTTSettings(connect_timeout=2, close_timeout=1)
        self.server: MQTTServer | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        ready = threading.Event()

        async def main() -> None:
            async with tidelog.open("memory://") as broker:
                self.server = MQTTServer(broker, Security.open(), self.settings)
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                ready.set()
                await self._stop.wait()

        self._thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the fuzz broker did not start")

    def run(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def close(self) -> None:
        if self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)


async def drive_connection(server: MQTTServer, data: bytes, timeout: float = 10) -> bytes:
    """Serve ``data`` (cut into reads by its first byte) as one client's bytes;
    return everything the server sent. Raises TimeoutError on a hang."""
    client, served = trio.testing.memory_stream_pair()
    cut = data[0] % 8 if data else 0

    connection = MQTTConnection(server, served, "fuzz", "fuzz")
    received = bytearray()

    async def read() -> None:
        while chunk := await client.receive_some(65_536):
            received.extend(chunk)

    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            nursery.start_soon(read)
            for chunk in _chunks(data[1:], cut):
                try:
                    await client.send_all(chunk)
                except trio.BrokenResourceError:
                    break  # the server closed: the rest is never read
                await trio.sleep(0)
            with contextlib.suppress(trio.BrokenResourceError):  # closed by the server
                await client.send_eof()
    return bytes(received)


_broker: LiveBroker | None = None
_errors = _Errors()


def fuzz_connection(data: bytes) -> None:
    global _broker
    if _broker is None:
        logging.getLogger("tidelog").addHandler(_errors)
        logging.getLogger("tidelog").setLevel(logging.WARNING)
        _broker = LiveBroker()
    assert _broker.server is not None
    sent = _broker.run(drive_connection, _broker.server, data)
    if _errors.records:
        record = _errors.records[0]
        _errors.records.clear()
        raise AssertionError(f"unexpected error logged: {record.getMessage()}\n{record.exc_text}")
    # what the server sent must be valid MQTT for a client of the level it accepted
    level = _level_of(data)
    if level is not None and sent:
        decoder = Decoder(level, role=Role.CLIENT)
        decoder.feed(sent)


def close_live_broker() -> None:
    """Stop the connection target's broker thread (for in-process use, e.g. tests)."""
    global _broker
    if _broker is not None:
        _broker.close()
        _broker = None
    logging.getLogger("tidelog").removeHandler(_errors)


def _level_of(data: bytes) -> int | None:
    """The level of the CONNECT at the start of the client's bytes, if it decodes."""
    try:
        packets = Decoder().feed(data[1:])
    except MQTTProtocolError as exc:
        packets = list(exc.packets)
    if packets and isinstance(packets[0], Connect):
        return packets[0].protocol_level
    return None


TARGETS = {"decoder": fuzz_decoder, "connection": fuzz_connection}


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] not in (*TARGETS, "corpus"):
        print(__doc__, file=sys.stderr)
        return 2
    target, corpus = argv[1], Path(argv[2])
    if target == "corpus":
        print(f"{write_corpus(corpus)} seeds in {corpus}")
        return 0
    if corpus.is_dir() or not corpus.exists():
        write_corpus(corpus)
    options = argv[3:]
    if not any(o.startswith("-artifact_prefix=") for o in options):
        options.append(f"-artifact_prefix={corpus}-")  # not into the working directory
    atheris.Setup([argv[0], str(corpus), *options], TARGETS[target])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
