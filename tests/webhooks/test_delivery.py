"""Webhooks against a real local HTTP endpoint that fails, stalls, answers 429/500/410/400
and recovers: every event delivered at least once and in order, signatures verified with
the ``standardwebhooks`` package, dead letters, disabling, and resuming after a restart."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from standardwebhooks.webhooks import Webhook

import tidelog
from tests.webhooks.receiver import Receiver
from tidelog import NewEvent
from tidelog.errors import LogClosedError
from tidelog.security import Security, SecurityConfig
from tidelog.webhooks import WebhookError, WebhookService, WebhookSpec
from tidelog.webhooks.signing import new_secret
from tidelog.webhooks.spec import AllowedURL, allowed_urls, check_url_allowed, masked_url

SECRET = new_secret()
FAST = {"retry_backoff": 0.01, "timeout": 5.0}


@contextlib.asynccontextmanager
async def running(
    url: str, receiver: Receiver | None = None
) -> AsyncIterator[tuple[tidelog.Broker, WebhookService, Receiver]]:
    receiver = receiver or Receiver()
    async with tidelog.open(url) as broker, trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        service = WebhookService(broker, Security.open())
        await nursery.start(service.run)
        yield broker, service, receiver
        nursery.cancel_scope.cancel()


def _spec(receiver: Receiver, name: str = "hook", **keys: Any) -> WebhookSpec:
    data = {"url": receiver.url, "filter": "orders/#", "secret": SECRET, "start": "earliest"}
    return WebhookSpec.from_dict(name, "anonymous", {**data, **FAST, **keys})


def _payloads(receiver: Receiver) -> list[str]:
    """Payloads of the requests answered 200, in arrival order."""
    out = []
    for request in receiver.requests:
        if request.answered == 200:
            body = json.loads(request.body)
            events = body.get("events", [body])
            out += [e["payload"] for e in events]
    return out


async def _settled(service: WebhookService, name: str, delivered: int) -> None:
    """Until the webhook has seen ``delivered`` events acknowledged (the endpoint answers
    before the delivery task reads the answer)."""
    while service.get("anonymous", name)[1].delivered < delivered:
        await trio.sleep(0.005)


def _publish(count: int, start: int = 0) -> list[NewEvent]:
    return [NewEvent("orders/eu", b"%d" % i) for i in range(start, start + count)]


async def test_retries_until_delivered_in_order_with_valid_signatures(tmp_path: Path) -> None:
    receiver = Receiver(script=[500, "close", (429, {"retry-after": "0"}), 503])
    async with running("memory://", receiver) as (broker, service, receiver):
        await broker.publish_many(_publish(3))
        await broker.publish("other/topic", b"not for the hook")
        assert await service.put(_spec(receiver))
        await receiver.wait_for(3)
        # events in order, each once among the 2xx answers
        assert _payloads(receiver) == [base64.b64encode(b"%d" % i).decode() for i in range(3)]
        # every attempt of the first event carried the same webhook-id
        first_id = receiver.requests[0].headers["webhook-id"]
        assert [r.headers["webhook-id"] for r in receiver.requests[:5]] == [first_id] * 5
        verifier = Webhook(SECRET)
        for request in receiver.requests:
            verifier.verify(request.body, request.headers)  # raises if the signature is wrong
        await _settled(service, "hook", 3)
        spec, status = service.get("anonymous", "hook")
        assert status.delivered == 3 and status.attempts == 7
        assert status.last_error == "HTTP 503" and status.last_success is not None
        assert "secret" not in spec.public()


async def test_stalled_endpoint_times_out_and_is_retried() -> None:
    receiver = Receiver(script=["stall"])
    async with running("memory://", receiver) as (broker, service, receiver):
        await service.put(_spec(receiver, timeout=0.2))
        await broker.publish("orders/eu", b"x")
        await receiver.wait_for(1)
        assert len(receiver.requests) == 2
        assert service.get("anonymous", "hook")[1].last_error == "timeout after 0.2s"


async def test_an_endless_answer_is_cut_off_not_read_into_memory() -> None:
    """Only the status matters: at most 64 KiB of the answer are read, then the
    connection is closed (reading it all would never end, here: a timeout and a retry)."""
    receiver = Receiver(script=["flood"])
    async with running("memory://", receiver) as (broker, service, receiver):
        await service.put(_spec(receiver, timeout=30.0))
        await broker.publish("orders/eu", b"x")
        await _settled(service, "hook", 1)
        status = service.get("anonymous", "hook")[1]
        assert status.attempts == 1 and status.last_error is None


async def test_retry_after_is_honoured() -> None:
    receiver = Receiver(script=[(429, {"retry-after": "1"})])
    async with running("memory://", receiver) as (broker, service, receiver):
        await service.put(_spec(receiver))
        await broker.publish("orders/eu", b"x")
        await receiver.wait_for(1)
        first, second = receiver.requests
        assert second.arrived - first.arrived >= 0.9  # it waited as asked, not 10 ms


async def test_client_errors_and_exhausted_retries_go_to_dead_letters() -> None:
    receiver = Receiver(script=[400, 500, 500])
    async with running("memory://", receiver) as (broker, service, receiver):
        await service.put(_spec(receiver, retries=1))
        await broker.publish_many(_publish(3))
        await receiver.wait_for(1)
        letters = [e async for e in broker.replay("$DLQ/webhook/hook", start="earliest")]
        reasons = [dict(e.properties.user_properties) for e in letters]  # type: ignore[union-attr]
        assert [
            (e.payload, r["dead_letter_reason"]) for e, r in zip(letters, reasons, strict=True)
        ] == [
            (b"0", "HTTP 400"),
            (b"1", "HTTP 500 after 2 attempts"),
        ]
        assert reasons[0]["dead_letter_offset"] == "0"
        assert _payloads(receiver) == ["Mg=="]  # "2", delivered after the others
        await _settled(service, "hook", 1)
        status = service.get("anonymous", "hook")[1]
        assert status.dead_lettered == 2 and status.delivered == 1


async def test_gone_disables_the_webhook_until_put_again(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path}/data"
    receiver = Receiver(script=[410])
    async with running(url, receiver) as (broker, service, receiver):
        await service.put(_spec(receiver))
        await broker.publish("orders/eu", b"a")
        await receiver.wait_requests(1)
        while service.get("anonymous", "hook")[1].state != "disabled":
            await trio.sleep(0.005)
        await broker.publish("orders/eu", b"b")
    async with running(url, Receiver(port=receiver.port)) as (broker, service, receiver):
        spec, status = service.get("anonymous", "hook")
        assert spec.disabled and status.state == "disabled"
        await service.put(_spec(receiver))  # enabled again, at the old cursor
        await receiver.wait_for(2)
        assert _payloads(receiver) == ["YQ==", "Yg=="]


async def test_resumes_after_restart_without_redelivering(tmp_path: Path) -> None:
    url = f"lmdb://{tmp_path}/data"
    async with running(url) as (broker, service, receiver):
        await service.put(_spec(receiver))
        await broker.publish_many(_publish(3))
        await _settled(service, "hook", 3)
    async with tidelog.open(url) as broker:  # published while the server was down
        await broker.publish_many(_publish(2, start=3))
    async with running(url, Receiver(port=receiver.port)) as (broker, service, receiver):
        await receiver.wait_for(2)
        assert _payloads(receiver) == ["Mw==", "NA=="]


async def test_batches_and_parallel_delivery() -> None:
    async with running("memory://") as (broker, service, receiver):
        await broker.publish_many(_publish(10))
        await service.put(_spec(receiver, batch=4))
        await receiver.wait_for(3)
        bodies = [json.loads(r.body) for r in receiver.requests]
        assert [len(b["events"]) for b in bodies] == [4, 4, 2]
        await service.put(_spec(receiver, name="par", batch=2, concurrency=3))
        await receiver.wait_for(8)
        assert sorted(_payloads(receiver)[10:]) == sorted(_payloads(receiver)[:10])


async def test_concurrency_keeps_several_requests_in_flight() -> None:
    """With ``concurrency`` 3, three requests are out at once (the endpoint stalls all
    three before answering any), and a stalled one does not hold the others back."""
    receiver = Receiver(script=["stall", "stall", "stall"])
    async with running("memory://", receiver) as (broker, service, receiver):
        await broker.publish_many(_publish(30))
        await service.put(_spec(receiver, batch=5, concurrency=3, timeout=2.0))
        await receiver.wait_requests(3)
        # none of the three has timed out yet: they are in flight together
        assert service.get("anonymous", "hook")[1].last_error is None
        await _settled(service, "hook", 30)
        delivered = _payloads(receiver)
        assert sorted(delivered) == sorted(base64.b64encode(b"%d" % i).decode() for i in range(30))
        assert len(delivered) == 30  # each once among the 2xx answers
        status = service.get("anonymous", "hook")[1]
        assert status.attempts == len(receiver.requests) == 9  # 6 batches + 3 retries


async def test_url_allow_list() -> None:
    receiver = Receiver()
    allowed = SecurityConfig(webhook_urls=["http://127.0.0.1:1/hooks/"])
    async with tidelog.open("memory://") as broker, trio.open_nursery() as nursery:
        await nursery.start(receiver.serve)
        service = WebhookService(broker, Security(allowed))
        await nursery.start(service.run)
        with pytest.raises(WebhookError, match="not allowed"):
            await service.put(_spec(receiver))  # another port, another path
        assert await broker.cursors() == []
        allowed.webhook_urls.append(f"http://127.0.0.1:{receiver.port}/hook")
        service = WebhookService(broker, Security(allowed))
        await nursery.start(service.run)
        await broker.publish_many(_publish(2))
        assert await service.put(_spec(receiver))
        await receiver.wait_for(2)
        nursery.cancel_scope.cancel()
    with pytest.raises(ValueError, match="allow-list"):
        allowed_urls(["https://h/x?q=1"])


def test_allow_list_path_prefix_cannot_be_escaped() -> None:
    """Encoded dots, slashes and backslashes, ``\\`` and ``;`` could be decoded by the
    endpoint's server into a path outside the prefix: refused, with a clear message."""
    allowed = [AllowedURL.parse("https://h.example/hooks/")]
    check_url_allowed("https://h.example/hooks/a/b?x=%2e", allowed)
    for path in (
        "/hooks/%2e%2e/admin",
        "/hooks/%2E./admin",
        "/hooks/..%2fadmin",
        "/hooks/..%5Cadmin",
        "/hooks/..\\admin",
        "/hooks/..;/admin",
        "/hooks/../admin",
        "/hooks/./a",
    ):
        with pytest.raises(WebhookError, match="could leave the path prefixes"):
            check_url_allowed(f"https://h.example{path}", allowed)
    with pytest.raises(WebhookError, match="not allowed: security"):
        check_url_allowed("https://h.example/other", allowed)
    # a host allowed as a whole: every path is inside it
    check_url_allowed("https://any.example/%2e%2e/x", [AllowedURL.parse("https://any.example")])


async def test_a_put_before_the_service_runs_is_refused_cleanly() -> None:
    async with tidelog.open("memory://") as broker:
        service = WebhookService(broker, Security.open())
        with pytest.raises(LogClosedError, match="not running"):
            await service.put(
                WebhookSpec.from_dict(
                    "h", "anonymous", {"url": "http://127.0.0.1:9/", "secret": SECRET}
                )
            )


def test_a_url_password_is_masked_where_shown() -> None:
    spec = WebhookSpec.from_dict(
        "h", "anonymous", {"url": "https://me:p%3Aw@h.example:8443/x?q=1", "secret": SECRET}
    )
    assert spec.public()["url"] == "https://me:********@h.example:8443/x?q=1"
    assert spec.stored()["url"] == spec.url  # delivery needs it
    assert masked_url("https://me@h.example/") == "https://me@h.example/"


async def test_definitions_are_validated_and_deleted() -> None:
    for bad in (
        {"url": "ftp://x/"},
        {"secret": "plain"},
        {"batch": 0},
        {"headers": {"webhook-id": "x"}},
        {"colour": "blue"},
        {"filter": "a/#/b"},
    ):
        with pytest.raises((WebhookError, ValueError)):
            WebhookSpec.from_dict(
                "h", "anonymous", {"url": "http://127.0.0.1/", "secret": SECRET, **bad}
            )
    async with running("memory://") as (broker, service, receiver):
        assert await service.put(_spec(receiver))
        assert not await service.put(_spec(receiver))  # replaced
        await service.delete("anonymous", "hook")
        with pytest.raises(LookupError):
            service.get("anonymous", "hook")
        assert await broker.cursors() == []


async def test_a_down_endpoint_holds_one_lease_not_the_backlog() -> None:
    """Memory stays flat: while the endpoint is down the webhook holds at most
    ``batch * (concurrency + 1)`` events; the rest wait in the log."""
    async with running("memory://") as (broker, service, _):
        down = Receiver()  # never started: connections are refused
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            down.port = probe.getsockname()[1]
        await service.put(_spec(down, batch=5, concurrency=2, retries=100))
        await broker.publish_many(_publish(2000))
        while service.get("anonymous", "hook")[1].attempts < 10:
            await trio.sleep(0.005)
        cursor = await broker.cursor("webhook:hook")
        group = await cursor.group()
        assert len(group.pending) <= 15
        assert cursor.position == 0 and await cursor.pending() == 2000
        assert service.get("anonymous", "hook")[1].state == "retrying"


async def test_the_http_client_is_made_with_the_first_webhook_and_closed_at_the_end() -> None:
    """A server without webhooks builds no HTTP client (it costs CPU and memory at start)."""
    async with running("memory://") as (broker, service, receiver):
        assert service._client is None
        await service.put(_spec(receiver))
        client = service._client
        assert client is not None
        await broker.publish("orders/eu", b"1")
        await receiver.wait_for(1)
    assert service._client is None and client.is_closed
