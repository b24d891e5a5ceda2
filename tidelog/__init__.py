"""tidelog: an event-sourced message broker.

MQTT (and REST / WebSocket) in front, a durable, replayable, topic- and
time-indexed log behind. Embedded use::

    import tidelog

    async with tidelog.open("lmdb://./tidelog-data") as broker:
        event = await broker.publish("devices/42/temp", b"21.5")

See ``docs/architecture.md`` for the layers.
"""

from tidelog.engine import Broker
from tidelog.engine import open_broker as open
from tidelog.storage import Event, NewEvent, Properties

__version__ = "0.1.0"

__all__ = ["Broker", "Event", "NewEvent", "Properties", "__version__", "open"]
