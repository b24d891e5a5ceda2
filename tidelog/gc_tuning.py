"""Cyclic garbage collector settings for the long-running broker process.

The delivery path allocates a few small container objects per message and
subscriber (a feed buffer entry, a ready-queue entry, the in-flight record of a
QoS 1 message). Reference counting frees them as soon as they are done with;
but every 700 container allocations (CPython's default generation-0
threshold) the cyclic collector also runs, and scans what is alive. At fan-out
rates that is thousands of collections a second. A higher threshold makes those
scans rare; reference counting still frees everything that is not in a cycle at
once, and cycles are still collected, only in larger batches (memory stays
bounded by the threshold's worth of allocations).

Measured (1 QoS 1 publisher, window 1000 -> 100 subscribers at QoS 1, broker
CPU per delivery, same run, alternating): 9.4 -> 6.0 us; see docs/mqtt.md,
"Performance of the connection layer".

``gc.freeze()`` moves everything created while starting (modules, classes,
configuration) to the permanent generation, so full collections no longer scan
it. Only ``tidelog serve`` calls :func:`tune_gc`: an embedding application (or
the test suite) keeps its own settings.
"""

from __future__ import annotations

import gc
from typing import Final

THRESHOLDS: Final = (50_000, 20, 100)
"""Generation 0: container allocations between collections (default 700); older
generations: collections of the younger one between theirs (defaults 10, 10)."""


def tune_gc() -> None:
    """Freeze what exists now and raise the collection thresholds (call once, before
    serving)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
