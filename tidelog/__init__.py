"""tidelog: an event-sourced message broker.

MQTT (and REST / WebSocket) in front, a durable, replayable, topic- and
time-indexed log behind. See ``docs/architecture.md`` for the layers.
"""

__version__ = "0.1.0"
