"""Overload through ``tidelog serve``: a connection flood past the file descriptor
limit, thousands of connections held, a publisher far faster than its consumers.

``tidelog/testing/overload.py`` runs the same with 10,000 connections.
"""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
import trio

from tidelog.testing.mqtt_client import ClientConnection, Target
from tidelog.testing.overload import (
    MEBIBYTE,
    hold_connections,
    open_idle_sockets,
    round_trip,
    stalled_subscribers_catch_up,
)
from tidelog.testing.server import HOST, HarnessServer, default_storage

pytestmark = pytest.mark.slow


def raise_own_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"needs {wanted} file descriptors, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def test_connection_flood_past_the_fd_limit(tmp_path: Path) -> None:
    """With RLIMIT_NOFILE at 200, 400 idle sockets exhaust the server's descriptors:
    accept backs off (trio's serve_listeners on EMFILE), clients already connected
    keep publishing and receiving, and new clients get in once the flood ends."""
    raise_own_nofile(2048)
    server = HarnessServer(default_storage(tmp_path), tmp_path / "server.log", nofile=200)
    await server.start()
    try:
        target = Target(HOST, server.ports["MQTT"])
        subscriber = await ClientConnection.open(target, "flood-sub", 5)
        await subscriber.subscribe("flood/#", 1)
        publisher = await ClientConnection.open(target, "flood-pub", 5)
        flood = await open_idle_sockets(HOST, server.ports["MQTT"], 400)
        try:
            await trio.sleep(1)
            assert b"EMFILE" in server.log_path.read_bytes() or b"Too many open files" in (
                server.log_path.read_bytes()
            ), "the flood did not exhaust the server's descriptors"
            for i in range(20):
                await round_trip(publisher, subscriber, "flood/t", f"during {i}".encode())
            assert server.process is not None and server.process.poll() is None
        finally:
            for sock in flood:
                sock.close()
        with trio.fail_after(15):  # the server frees the flood's descriptors and accepts
            while True:
                try:
                    late = await ClientConnection.open(target, "flood-late", 5)
                    break
                except Exception:
                    await trio.sleep(0.2)
        await late.subscribe("flood/#", 1)
        await round_trip(publisher, late, "flood/t", b"after")
        assert await server.terminate() == 0, server.tail()
    finally:
        server.kill()


async def test_thousands_of_connections_held(tmp_path: Path) -> None:
    count = 3000
    raise_own_nofile(count + 512)
    server = HarnessServer(default_storage(tmp_path), tmp_path / "server.log")
    await server.start()
    try:
        assert server.process is not None
        result = await hold_connections(
            HOST, server.ports["MQTT"], count, hold=2, pid=server.process.pid
        )
        assert result.connected == count, result
        assert result.delivered, "a publish through the loaded server was not delivered"
        per_connection = (result.peak_rss - result.rss_before) / count
        print(f"{count} connections: {result}, {per_connection / 1024:.0f} KiB each")
        assert per_connection < 256 * 1024, f"{per_connection / 1024:.0f} KiB per connection"
        assert await server.terminate() == 0, server.tail()
    finally:
        server.kill()


async def test_publisher_far_faster_than_consumers(tmp_path: Path) -> None:
    server = HarnessServer(default_storage(tmp_path), tmp_path / "server.log")
    await server.start()
    try:
        result = await stalled_subscribers_catch_up(
            server, subscribers=4, messages=16_000, payload=16 * 1024
        )
        print(result)
        assert result.delivered_everything, result
        # what the server holds for stalled subscribers is bounded (pending deliveries
        # per connection, feed bytes, the writer's queue), not the backlog: 250 MiB
        # published past four stalled subscribers, the server grows by far less
        # (measured on LMDB, anonymous memory: +119 MiB for 250 MiB published, see
        # docs/reliability.md for larger runs)
        assert result.peak_rss - result.rss_before < 200 * MEBIBYTE, result
        assert await server.terminate() == 0, server.tail()
    finally:
        server.kill()
