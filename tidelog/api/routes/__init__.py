"""The REST API's routes, one module per resource, and the shared parts they use.

Resources: :mod:`.events` (publish, read, stream), :mod:`.topics`, :mod:`.cursors`,
:mod:`.operations` (stats, health, metrics), :mod:`.pages` (index, docs, UI).
Shared: :mod:`.params` (dependencies and query parameters), :mod:`.reading` (the
one read path: read, filter by ACL, page), :mod:`.responses`.

A new resource is a module with a ``router`` (a :class:`fastapi.APIRouter`) and one
line in :data:`RESOURCES`; :func:`tidelog.api.rest.create_app` includes them all.
"""

from __future__ import annotations

from fastapi import APIRouter

from tidelog.api.routes import cluster, cursors, events, operations, pages, topics

RESOURCES: tuple[APIRouter, ...] = (
    events.router,
    cursors.router,
    topics.router,
    operations.router,
    cluster.router,
    pages.router,
)
"""Every resource's routes, in the order they are matched and documented."""
