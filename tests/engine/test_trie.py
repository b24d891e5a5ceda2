from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.engine.trie import SubscriptionTrie
from tidelog.topics import topic_matches

levels = st.sampled_from(["a", "b", "$SYS", "", "c"])
topics = st.lists(levels, min_size=1, max_size=4).map("/".join).filter(bool)
filter_levels = st.sampled_from(["a", "b", "$SYS", "", "+"])


@st.composite
def filters(draw: st.DrawFn) -> str:
    parts = draw(st.lists(filter_levels, min_size=1, max_size=4))
    if draw(st.booleans()):
        parts.append("#")
    return "/".join(parts) or "a"


@settings(max_examples=300, deadline=None)
@given(st.lists(filters(), min_size=1, max_size=12), st.lists(topics, min_size=1, max_size=12))
def test_trie_agrees_with_the_filter_matcher(fs: list[str], ts: list[str]) -> None:
    trie: SubscriptionTrie[int] = SubscriptionTrie()
    for index, f in enumerate(fs):
        trie.add(f, index)
    for topic in ts:
        expected = {i for i, f in enumerate(fs) if topic_matches(f, topic)}
        assert set(trie.match(topic)) == expected, topic


def test_remove_prunes_and_reports() -> None:
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    assert trie.add("a/+/c", "x") is True
    assert trie.add("a/+/c", "x") is False
    trie.add("a/#", "y")
    assert sorted(trie.match("a/b/c")) == ["x", "y"]
    assert trie.remove("a/+/c", "x") is True
    assert trie.remove("a/+/c", "x") is False
    assert trie.remove("never/added", "x") is False
    assert trie.match("a/b/c") == ["y"]
    assert len(trie) == 1
    assert list(trie.filters()) == [("a/#", "y")]


def test_dollar_topics_need_a_literal_first_level() -> None:
    trie: SubscriptionTrie[str] = SubscriptionTrie()
    for f in ["#", "+/monitor/Clients", "$SYS/#", "$SYS/monitor/+"]:
        trie.add(f, f)
    assert sorted(trie.match("$SYS/monitor/Clients")) == ["$SYS/#", "$SYS/monitor/+"]
    assert trie.match("sport") == ["#"]
