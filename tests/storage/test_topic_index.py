"""The active segment's topic index: a batch's offsets grouped by topic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tidelog.storage.lmdb_segment import TopicIndex


@given(st.lists(st.sampled_from(["a", "a/b", "c"]), max_size=30), st.integers(0, 1000))
def test_a_batch_is_grouped_by_topic_in_order(topics: list[str], first: int) -> None:
    """Any batch, one topic (no loop) or several: each topic's offsets, in order."""
    grouped = TopicIndex.group(iter(topics), first)
    expected: dict[str, list[int]] = {}
    for offset, topic in enumerate(topics, first):
        expected.setdefault(topic, []).append(offset)
    assert dict(grouped) == expected
    assert list(grouped) == list(expected)  # topics in the order they first came


def test_a_batch_of_one_topic_is_one_range() -> None:
    assert TopicIndex.group(["t"] * 4, 7) == {"t": [7, 8, 9, 10]}
    assert TopicIndex.group(["t", "u", "t"], 0) == {"t": [0, 2], "u": [1]}
    assert dict(TopicIndex.group([], 3)) == {}
