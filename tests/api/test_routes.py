"""The route modules of tidelog/api/routes: every resource module is registered."""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import APIRouter

from tidelog.api import routes


def test_every_route_module_is_registered() -> None:
    """A module with a ``router`` that is not in RESOURCES would serve nothing."""
    found = []
    for info in pkgutil.iter_modules(routes.__path__):
        module = importlib.import_module(f"{routes.__name__}.{info.name}")
        router = getattr(module, "router", None)
        if isinstance(router, APIRouter):
            found.append(info.name)
            assert any(router is r for r in routes.RESOURCES), f"{info.name} is not in RESOURCES"
    assert len(found) == len(routes.RESOURCES)


def test_each_path_and_method_has_one_route() -> None:
    """Two resource modules must not both claim an operation."""
    seen: set[tuple[str, str]] = set()
    for router in routes.RESOURCES:
        for route in router.routes:
            for method in getattr(route, "methods", ()):
                key = (method, route.path)  # type: ignore[attr-defined]
                assert key not in seen, key
                seen.add(key)
