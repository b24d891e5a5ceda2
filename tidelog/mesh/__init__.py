"""The event mesh: durable links between tidelog nodes (docs/mesh.md).

A link is configured on one node (``[[link]]``) and dials another node's normal
MQTT listener. Over it, the dialing node *pulls* events from the remote's log
from a position it keeps, and *pushes* its own events, whose position the
remote keeps. Every forwarded event carries its origin node, its offset at the
origin and its hop path; the receiver appends it to its own log, and link
positions are recovered from those stored fields after any crash.

Modules: ``config`` (``[node]`` and ``[[link]]``), ``identity`` (node id and log
incarnation), ``wire`` (the ``$link/...`` messages, sans-IO), ``routing`` (what
may cross a link: modes, hop paths, cycles; sans-IO), ``positions`` (link
positions and their recovery), ``stream`` (one link connection's trio shell),
``node`` (the mesh of one server: links, counters, the accept hook).
"""
