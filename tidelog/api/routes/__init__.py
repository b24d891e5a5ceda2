"""The REST API's routes, one module per resource, and the shared parts they use.

Resources: :mod:`.events` (publish, read, stream), :mod:`.topics`, :mod:`.cursors`,
:mod:`.operations` (stats, health, metrics), :mod:`.overview` (the console's overview
and its stream), :mod:`.clients` (MQTT clients and sessions), :mod:`.links` (mesh
links), :mod:`.pages` (Swagger UI), :mod:`.console` (the web console's page, index
and redirect).
Shared: :mod:`.params` (dependencies and query parameters), :mod:`.reading` (the
one read path: read, filter by ACL, page), :mod:`.responses`.

A new resource is a module here with a ``router`` (a :class:`fastapi.APIRouter`),
named in the import below and registered by one line in :data:`RESOURCES`;
:func:`tidelog.api.rest.create_app` includes them all, and
``tests/api/test_routes.py`` fails for a module with a router left out.
"""

from __future__ import annotations

from fastapi import APIRouter

from tidelog.api.routes import (
    clients,
    cluster,
    console,
    cursors,
    events,
    links,
    operations,
    overview,
    pages,
    topics,
    webhooks,
)

RESOURCES: tuple[APIRouter, ...] = (
    events.router,
    cursors.router,
    webhooks.router,
    topics.router,
    operations.router,
    overview.router,
    clients.router,
    cluster.router,
    links.router,
    pages.router,
    console.router,
)
"""Every resource's routes, in the order they are matched and documented."""
