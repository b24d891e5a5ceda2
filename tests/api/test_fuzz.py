"""Property-based fuzz of the REST API from its own OpenAPI document (schemathesis).

For every operation of ``/openapi.json``, schemathesis generates valid and
invalid requests; whatever they hold, the server must not answer 5xx, and
every error must be a problem+json document. The server runs in this trio
process; schemathesis is synchronous (``requests``), so it runs in a worker
thread. The SSE streams are left out (they never end); long-polls are capped to
a few ms so the run stays short.
"""

from __future__ import annotations

from typing import Any

import httpx
import hypothesis
import hypothesis.errors
import pytest
import schemathesis
import trio
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode

EXAMPLES = {GenerationMode.POSITIVE: 100, GenerationMode.NEGATIVE: 50}
SKIP = {("GET", "/v1/events/stream"), ("GET", "/v1/overview/stream")}
FROM_HYPERCORN = {431}
"""Refused by the HTTP server before the app sees the request (headers too large)."""


def fuzz(spec: dict[str, Any], base_url: str) -> list[str]:
    """Run every operation; return a description of each failure."""
    schema = schemathesis.openapi.from_dict(spec)
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        for mode, count in EXAMPLES.items():

            @hypothesis.settings(
                max_examples=count,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.given(case=operation.as_strategy(mode))
            def check(case: Any) -> None:
                if case.query and "wait_ms" in case.query:
                    case.query["wait_ms"] = 5
                response = case.call(base_url=base_url, timeout=15)
                where = f"{case.method} {case.formatted_path} {case.query!r}"[:300]
                assert response.status_code < 500, f"{where} -> {response.status_code}"
                if response.status_code >= 400 and response.status_code not in FROM_HYPERCORN:
                    content_type = response.headers.get("content-type", [""])[0]
                    assert content_type == "application/problem+json", (
                        f"{where} -> {response.status_code} {content_type}"
                    )

            try:
                check()
            except AssertionError as failure:
                failures.append(str(failure))
            except hypothesis.errors.Unsatisfiable:
                pass  # nothing to make invalid (an operation without parameters)
    return failures


@pytest.mark.slow
@pytest.mark.parametrize("storage_url", ["sqlite"], indirect=True)
async def test_rest_api_never_answers_5xx(client: httpx.AsyncClient, http_port: int) -> None:
    spec = (await client.get("/openapi.json")).json()
    failures = await trio.to_thread.run_sync(fuzz, spec, f"http://127.0.0.1:{http_port}")
    assert not failures, "\n".join(failures)
    assert (await client.get("/healthz")).status_code == 200
