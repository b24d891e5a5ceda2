"""Property (issue 20, findings 1 and 7): arbitrary names of arbitrary lengths, fed
through every place a client-chosen name enters REST and ``/v1/ws`` (topics, retained
topics, filters, cursor names, user property keys, client ids, owners), get a clear
answer: success or a 4xx problem / WebSocket error frame, never a 5xx, a 1011 close
or a server exit; and the data directory restarts cleanly afterwards."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.serve_process import start_server
from tidelog.testing.server import ServerProcess

# short names of any characters, names around the storage limits (500-520 bytes),
# and long runs of one character up to past MQTT's 65,535-byte strings
names = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x7F), min_size=490, max_size=530),
    st.builds(lambda ch, n: ch * n, st.characters(), st.integers(40, 70_000)),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    directory = tmp_path_factory.mktemp("names")
    data = f"lmdb://{directory}/data"
    serve = start_server(directory, "--storage", data, "--mqtt-port", "off", "--ws-port", "0",
                         "--http-port", "0", expect=("WebSocket", "HTTP"))  # fmt: skip
    try:
        yield serve, directory
    finally:
        if serve.process.poll() is None:
            serve.kill()


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _json(body: Any) -> dict[str, Any]:
    """A JSON body as ASCII (lone surrogates go as \\uXXXX escapes, as any client may)."""
    return {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}


def rest_requests(name: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every REST request a name enters: (method, path, httpx keyword arguments)."""
    event = {"topic": name, "payload": "eA==", "retain": True}
    props = {"user_properties": [[name, "v"]]}
    yield "POST", "/v1/events", _json({"events": [event]})
    yield "POST", "/v1/events", _json({"events": [{"topic": "t", "payload": "",
                                                   "properties": props}]})  # fmt: skip
    yield "PUT", "/v1/cursors/c", _json({"filter": name})
    try:
        path = _quote(name)
    except UnicodeEncodeError:
        return  # a lone surrogate: no URL can carry it
    yield "POST", f"/v1/topics/{path}", {"params": {"retain": "true"}, "content": b"x"}
    yield "POST", f"/v1/topics/{path}", {"params": {"retain": "true"}, "content": b""}
    for where in ("/v1/events", "/v1/topics"):
        yield "GET", where, {"params": {"filter": name}}
    yield "GET", "/v1/offsets", {"params": {"time": "0", "filter": name}}
    yield "PUT", f"/v1/cursors/{path}", _json({"filter": "#", "start": "earliest"})
    yield "PUT", f"/v1/cursors/{path}", _json({"filter": name})
    yield "GET", f"/v1/cursors/{path}", {}
    yield "POST", f"/v1/cursors/{path}/fetch", {}
    yield "POST", f"/v1/cursors/{path}/commit", _json({"offset": 0})
    yield "GET", "/v1/cursors/c", {"params": {"owner": name}}
    yield "DELETE", f"/v1/cursors/{path}", {}
    try:
        header = name.encode("latin-1").decode("ascii")
    except UnicodeError:
        header = ""
    if header and header.isprintable() and header.strip() == header:
        yield "POST", "/v1/topics/t", {"headers": {"X-Tidelog-Client-Id": header}, "content": b""}


def ws_messages(name: str) -> list[dict[str, Any]]:
    props = {"user_properties": [[name, "v"]]}
    return [
        {"type": "publish", "topic": name, "payload": "eA==", "retain": True},
        {"type": "publish", "topic": name, "payload": "", "retain": True},
        {"type": "publish_batch", "events": [{"topic": name, "payload": "eA=="}]},
        {"type": "publish", "topic": "t", "payload": "", "properties": props},
        {"type": "subscribe", "sub": "f", "filter": name},
        {"type": "subscribe", "sub": "c", "filter": "#", "cursor": name, "start": "earliest"},
        {"type": "subscribe", "sub": "n", "cursor": name},
        {"type": "commit", "cursor": name, "offset": 0},
        {"type": "subscribe", "sub": name, "filter": "x"},
        {"type": "unsubscribe", "sub": name},
    ]


async def ws_check(port: int, name: str) -> None:
    async with trio_websocket.open_websocket(
        "127.0.0.1", port, "/v1/ws", use_ssl=False, max_message_size=2**22
    ) as ws:
        for number, message in enumerate(ws_messages(name), 1):
            await ws.send_message(json.dumps({**message, "id": number}))
            with trio.fail_after(20):
                while True:
                    reply = json.loads(await ws.get_message())
                    if reply.get("id") == number:
                        break
            if reply["type"] == "error":
                assert 400 <= reply["status"] < 500, (message["type"], reply)
            else:
                assert reply["type"] in ("ack", "subscribed", "committed", "unsubscribed"), reply
            if reply["type"] == "subscribed":
                await ws.send_message(json.dumps({"type": "unsubscribe", "sub": reply["sub"],
                                                  "id": f"u{number}"}))  # fmt: skip
                with trio.fail_after(20):
                    while json.loads(await ws.get_message()).get("id") != f"u{number}":
                        pass


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(name=names)
@example(name="a/\ud800")  # a lone surrogate (JSON may carry one as an escape)
@example(name="x" * 511)
def test_arbitrary_names_get_a_clear_answer(server: tuple[ServerProcess, Path], name: str) -> None:
    serve, _ = server
    # a connection per request: a refusal sent before the body was read ends the
    # connection, and a reused one would race with that close
    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=serve.url, timeout=20, limits=fresh) as client:
        for method, path, kwargs in rest_requests(name):
            try:
                response = client.request(method, path, **kwargs)
            except httpx.InvalidURL:
                continue  # longer than the client itself sends
            except httpx.TransportError as exc:
                log = "".join(line[:300] for line in serve.lines[-5:])
                raise AssertionError(f"{method} {path[:80]}: {exc!r}\n{log}") from exc
            assert response.status_code < 500, (method, path[:80], response.text[:300])
            if response.status_code >= 400 and "content-type" in response.headers:
                # (without one: Hypercorn's own refusal of a request line past 16 KiB)
                assert response.headers["content-type"] == "application/problem+json"
    trio.run(ws_check, serve.ports["WebSocket"], name)
    assert serve.process.poll() is None, "".join(serve.lines[-20:])
    assert httpx.get(f"{serve.url}/healthz").status_code == 200


def test_restarts_cleanly_afterwards(server: tuple[ServerProcess, Path]) -> None:
    """Runs after the property (file order): stop, start on the same data, serve."""
    serve, directory = server
    assert serve.process.poll() is None, "".join(serve.lines[-20:])
    assert serve.stop() == 0, "".join(serve.lines[-20:])
    again = start_server(directory, "--storage", f"lmdb://{directory}/data", "--mqtt-port", "off",
                         "--ws-port", "off", "--http-port", "0", expect=("HTTP",))  # fmt: skip
    try:
        assert httpx.get(f"{again.url}/healthz").status_code == 200
        assert httpx.get(f"{again.url}/v1/cursors").status_code == 200
        assert httpx.get(f"{again.url}/v1/topics").status_code == 200
    finally:
        assert again.stop() == 0, "".join(again.lines[-20:])
    assert not any("Traceback" in line for line in serve.lines + again.lines)
