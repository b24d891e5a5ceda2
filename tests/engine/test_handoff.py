"""Replay-then-live: no gap and no duplicate across the handoff, under any interleaving.

Hypothesis draws a history, a start offset, a tiny feed bound (so the feed
falls behind and catches up again and again) and a sequence of publishes,
receives and scheduler yields; the subscriber must see exactly the matching
events from its start, each once, in offset order.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.storage.backends import BACKEND_NAMES, make_backend
from tidelog import NewEvent
from tidelog.engine import open_broker
from tidelog.storage import Event
from tidelog.topics import topic_matches

TOPICS = ["t/a", "t/b", "u/c"]

operations = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.lists(st.sampled_from(TOPICS), min_size=1, max_size=8)),
        st.tuples(st.just("receive"), st.integers(1, 6)),
        st.tuples(st.just("yield"), st.integers(1, 4)),
    ),
    max_size=30,
)


async def scenario(
    url: str,
    history: list[str],
    start_index: int,
    topic_filter: str,
    feed_max_events: int,
    ops: list[tuple[str, object]],
) -> None:
    async with open_broker(url, feed_max_events=feed_max_events) as broker:
        published: list[Event] = []
        if history:
            published += await broker.publish_many([NewEvent(t, b"h") for t in history])
        start = min(start_index, len(published))

        def stored(result: list[Event] | BaseException) -> None:
            assert isinstance(result, list)
            published.extend(result)

        got: list[Event] = []
        async with broker.subscribe(topic_filter, start=start) as sub:
            for kind, arg in ops:
                if kind == "publish":
                    assert isinstance(arg, list)
                    broker.publish_nowait([NewEvent(t, b"p") for t in arg], stored)
                elif kind == "receive":
                    assert isinstance(arg, int)
                    with trio.move_on_after(0.002):
                        got += await sub.receive_batch(arg)
                else:
                    assert isinstance(arg, int)
                    for _ in range(arg):
                        await trio.sleep(0)
            await broker._writer.wait_idle()
            published.sort(key=lambda e: e.offset)
            expected = [
                e.offset
                for e in published
                if e.offset >= start and topic_matches(topic_filter, e.topic)
            ]
            with trio.fail_after(10):
                while len(got) < len(expected):
                    got += await sub.receive_batch(100)
            with trio.move_on_after(0.01):
                got += await sub.receive_batch(100)  # nothing more may come
        assert [e.offset for e in got] == expected


@pytest.mark.parametrize("backend_name", BACKEND_NAMES)
def test_replay_then_live_is_exactly_once(backend_name: str, tmp_path: Path) -> None:
    examples = 60 if backend_name == "memory" else 25

    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        history=st.lists(st.sampled_from(TOPICS), max_size=25),
        start_index=st.integers(0, 30),
        topic_filter=st.sampled_from(["t/#", "t/a", "#", "+/c"]),
        feed_max_events=st.integers(1, 5),
        ops=operations,
    )
    def run(
        history: list[str],
        start_index: int,
        topic_filter: str,
        feed_max_events: int,
        ops: list[tuple[str, object]],
    ) -> None:
        where = tmp_path / uuid.uuid4().hex
        where.mkdir()
        backend = make_backend(backend_name, where)
        trio.run(scenario, backend.url, history, start_index, topic_filter, feed_max_events, ops)

    run()
