"""The REST API's routes, one module per resource, and the shared parts they use.

Resources: :mod:`.events` (publish, read, stream), :mod:`.topics`, :mod:`.cursors`,
:mod:`.operations` (stats, health, metrics), :mod:`.links` (mesh links),
:mod:`.pages` (index, docs, UI).
Shared: :mod:`.params` (dependencies and query parameters), :mod:`.reading` (the
one read path: read, filter by ACL, page), :mod:`.responses`.

A new resource is a module here with a ``router`` (a :class:`fastapi.APIRouter`),
named in the import below and registered by one line in :data:`RESOURCES`;
:func:`tidelog.api.rest.create_app` includes them all, and
``tests/api/test_routes.py`` fails for a module with a router left out.
"""

from __future__ import annotations

from fastapi import APIRouter

from tidelog.api.routes import cluster, cursors, events, links, operations, pages, topics

RESOURCES: tuple[APIRouter, ...] = (
    events.router,
    cursors.router,
    topics.router,
    operations.router,
    cluster.router,
    links.router,
    pages.router,
)
"""Every resource's routes, in the order they are matched and documented."""
