"""A server's webhooks: definitions stored in the log, one delivery task each.

Definitions live in the log's ``webhooks`` state namespace (key: the owner's
stored name, as for cursors), so a webhook resumes after a restart where its
cursor stopped. ``[[webhook]]`` tables of the configuration file are applied at
start (created or replaced, owned by their ``owner`` key, default
``anonymous``). The REST routes (:mod:`tidelog.api.webhooks`) and the CLI call
:meth:`WebhookService.put`, :meth:`get`, :meth:`list` and :meth:`delete`.

``security.webhook_urls`` (an allow-list of URL prefixes) is checked by
:meth:`WebhookService.put`, whatever the webhook comes from (REST, the CLI, the
configuration file: a refused ``[[webhook]]`` stops the start); a stored webhook
the list no longer allows is kept but not run (state ``failed``).

Resource handling: one shared :class:`~tidelog.webhooks.http.Poster` (connection pooling per
endpoint) for every webhook, made when the first webhook starts and closed when
:meth:`run` ends; each webhook's task runs in its own cancel scope inside the
service's nursery. A server without webhooks never builds the pool: building an
HTTP client (httpx's, before the pool) just after the port opened cost an
MQTT-only broker 50-80 ms of CPU and about 9 MiB (issue 19).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import trio

from tidelog.engine import Broker
from tidelog.engine.cursors import DEFAULT_OWNER, stored_name
from tidelog.errors import LogClosedError
from tidelog.security import Principal, Security
from tidelog.webhooks.delivery import WebhookDelivery, WebhookStatus
from tidelog.webhooks.spec import AllowedURL, WebhookError, WebhookSpec, check_url_allowed

if TYPE_CHECKING:
    from tidelog.webhooks.http import Poster

log = logging.getLogger(__name__)

NAMESPACE = "webhooks"


class WebhookNotFoundError(WebhookError, LookupError):
    """No webhook has that name (for that owner)."""


class _Running:
    __slots__ = ("delivery", "scope")

    def __init__(self, delivery: WebhookDelivery, scope: trio.CancelScope) -> None:
        self.delivery = delivery
        self.scope = scope


class WebhookService:
    """Keeps and runs the webhooks of one broker. Start :meth:`run` in a nursery."""

    def __init__(
        self, broker: Broker, security: Security, configured: list[dict[str, Any]] | None = None
    ) -> None:
        self.broker = broker
        self.security = security
        self.configured = configured or []
        self.allowed = [AllowedURL.parse(entry) for entry in security.config.webhook_urls]
        """``security.webhook_urls``: where webhooks may point (empty: anywhere)."""
        self._running: dict[str, _Running] = {}
        self._nursery: trio.Nursery | None = None
        self._client: Poster | None = None
        self._running_service = False
        """True while :meth:`run` runs: a PUT outside it is refused (503), not a crash."""

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every stored and configured webhook; deliver until cancelled."""
        self._running_service = True
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for key, raw in (await self.broker.load_state(NAMESPACE)).items():
                    try:
                        spec = WebhookSpec.from_stored(json.loads(raw))
                    except (ValueError, TypeError) as exc:
                        log.error("webhook %r cannot be loaded (%s); skipped", key, exc)
                        continue
                    self._start(spec)
                for table in self.configured:
                    await self.put_configured(table)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._running_service = False
            client, self._client = self._client, None
            if client is not None:
                with trio.CancelScope(shield=True):
                    await client.aclose()

    def _http(self) -> Poster:
        """The shared HTTP connection pool, made on first use (see the module docstring)."""
        if self._client is None:
            from tidelog.webhooks.http import Poster  # here: only a server with webhooks loads it

            self._client = Poster()
        return self._client

    async def put_configured(self, table: dict[str, Any]) -> None:
        """Apply one ``[[webhook]]`` table (``name`` and ``owner`` beside the keys)."""
        table = dict(table)
        name = table.pop("name", None)
        owner = table.pop("owner", DEFAULT_OWNER)
        if not isinstance(name, str) or not isinstance(owner, str):
            raise WebhookError("a [[webhook]] table needs a name (and an optional owner)")
        await self.put(WebhookSpec.from_dict(name, owner, table))

    # -- definitions -----------------------------------------------------------------

    async def put(self, spec: WebhookSpec) -> bool:
        """Create or replace a webhook (stored durably, then delivering); True if it
        was created. A replaced webhook keeps its cursor when the filter is the same;
        a new filter starts a new cursor at ``start``."""
        check_url_allowed(spec.url, self.allowed)
        key = stored_name(spec.owner, spec.name)
        old = self._running.get(key)
        existed = old is not None or await self._stored(key) is not None
        if old is not None:
            old.scope.cancel()
            del self._running[key]
            if old.delivery.spec.filter != spec.filter:
                await self.broker.delete_cursor(spec.cursor_name, owner=spec.owner)
        delivery = self._delivery(spec)
        await delivery.open_cursor()  # a bad start or a cursor conflict fails the PUT
        await self.broker.save_state(NAMESPACE, {key: json.dumps(spec.stored()).encode()})
        self._start(spec, delivery)
        return not existed

    def get(self, owner: str, name: str) -> tuple[WebhookSpec, WebhookStatus]:
        running = self._running.get(stored_name(owner, name))
        if running is None:
            raise WebhookNotFoundError(f"no webhook named {name!r}")
        return running.delivery.spec, running.delivery.status

    def list(self, owner: str | None = None) -> list[tuple[WebhookSpec, WebhookStatus]]:
        """Every webhook (or ``owner``'s), by owner and name."""
        found = [
            (r.delivery.spec, r.delivery.status)
            for r in self._running.values()
            if owner is None or r.delivery.spec.owner == owner
        ]
        return sorted(found, key=lambda pair: (pair[0].owner, pair[0].name))

    async def delete(self, owner: str, name: str) -> None:
        """Stop and remove a webhook, its cursor and its stored definition."""
        key = stored_name(owner, name)
        running = self._running.pop(key, None)
        if running is None:
            raise WebhookNotFoundError(f"no webhook named {name!r}")
        running.scope.cancel()
        await self.broker.delete_cursor(running.delivery.spec.cursor_name, owner=owner)
        await self.broker.save_state(NAMESPACE, {key: None})

    async def lag(self, spec: WebhookSpec) -> int:
        running = self._running.get(stored_name(spec.owner, spec.name))
        cursor = None if running is None else running.delivery.cursor
        return 0 if cursor is None else cursor.lag

    # -- tasks -----------------------------------------------------------------------

    async def _stored(self, key: str) -> bytes | None:
        return (await self.broker.load_state(NAMESPACE)).get(key)

    def _delivery(self, spec: WebhookSpec) -> WebhookDelivery:
        if not self._running_service:
            raise LogClosedError("webhooks are not running (the server is starting or stopping)")
        user = None if spec.owner == DEFAULT_OWNER else spec.owner
        access = self.security.access(Principal(user=user))
        return WebhookDelivery(self.broker, spec, access, self._http(), self._disable)

    def _start(self, spec: WebhookSpec, delivery: WebhookDelivery | None = None) -> None:
        assert self._nursery is not None
        delivery = delivery or self._delivery(spec)
        scope = trio.CancelScope()
        self._running[stored_name(spec.owner, spec.name)] = _Running(delivery, scope)
        try:  # a stored webhook the allow-list no longer allows is kept, not run
            check_url_allowed(spec.url, self.allowed)
        except WebhookError as exc:
            delivery.status.state = "failed"
            delivery.status.last_error = str(exc)
            log.error("webhook %s: %s", spec.name, exc)
            return

        async def deliver() -> None:
            with scope:
                try:
                    await delivery.run()
                except Exception:  # a bug costs this webhook, not the server
                    log.exception("webhook %s failed", spec.name)
                    delivery.status.state = "failed"

        self._nursery.start_soon(deliver)

    async def _disable(self, spec: WebhookSpec) -> None:
        """410 Gone: store the webhook as disabled (a new PUT enables it again)."""
        disabled = WebhookSpec.from_stored({**spec.stored(), "disabled": True})
        running = self._running.get(stored_name(spec.owner, spec.name))
        if running is not None:
            running.delivery.spec = disabled
        key = stored_name(spec.owner, spec.name)
        await self.broker.save_state(NAMESPACE, {key: json.dumps(disabled.stored()).encode()})
