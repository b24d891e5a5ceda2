"""A subscription trie: which subscriptions match a topic name.

Filters are split into levels; each node has children by literal level plus
optional ``+`` and ``#`` children. Matching walks the topic's levels once,
following the literal child and the ``+`` child at every level and collecting
``#`` nodes on the way, so the cost depends on the topic's depth and the number
of matches, not on how many filters exist. A leading ``+`` or ``#`` does not
match a topic that starts with ``$`` (MQTT 4.7.2).

Values are opaque and hashable; a filter can hold many values.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

V = TypeVar("V", bound=Hashable)


class _Node(Generic[V]):
    __slots__ = ("children", "values")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        self.values: dict[V, None] = {}  # insertion-ordered set


class SubscriptionTrie(Generic[V]):
    """Maps validated topic filters to sets of values."""

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._count = 0

    def __len__(self) -> int:
        """Number of (filter, value) pairs stored."""
        return self._count

    def add(self, topic_filter: str, value: V) -> bool:
        """Store ``value`` under ``topic_filter``; False if it was already there."""
        node = self._root
        for level in topic_filter.split("/"):
            node = node.children.setdefault(level, _Node())
        if value in node.values:
            return False
        node.values[value] = None
        self._count += 1
        return True

    def remove(self, topic_filter: str, value: V) -> bool:
        """Remove ``value`` from ``topic_filter``, pruning empty nodes; False if absent."""
        path: list[tuple[_Node[V], str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if value not in node.values:
            return False
        del node.values[value]
        self._count -= 1
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.values or child.children:
                break
            del parent.children[level]
        return True

    def match(self, topic: str) -> list[V]:
        """Every value whose filter matches ``topic``, each once, in no promised order."""
        found: dict[V, None] = {}
        levels = topic.split("/")
        dollar = topic.startswith("$")
        last = len(levels)
        # (node, index of the next level to match)
        stack: list[tuple[_Node[V], int]] = [(self._root, 0)]
        while stack:
            node, index = stack.pop()
            wildcards_allowed = not (dollar and index == 0)
            if wildcards_allowed:
                hash_node = node.children.get("#")
                if hash_node is not None:  # '#' also matches the parent level
                    found.update(hash_node.values)
            if index == last:
                found.update(node.values)
                continue
            child = node.children.get(levels[index])
            if child is not None:
                stack.append((child, index + 1))
            if wildcards_allowed:
                plus = node.children.get("+")
                if plus is not None:
                    stack.append((plus, index + 1))
        return list(found)

    def filters(self) -> Iterator[tuple[str, V]]:
        """Every stored (filter, value) pair."""
        stack: list[tuple[_Node[V], list[str]]] = [(self._root, [])]
        while stack:
            node, path = stack.pop()
            if path:
                for value in node.values:
                    yield "/".join(path), value
            for level, child in node.children.items():
                stack.append((child, [*path, level]))
