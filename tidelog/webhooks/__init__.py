"""Webhooks: durable consumers whose member is an HTTP endpoint (docs/consumers.md).

:mod:`~tidelog.webhooks.spec` validates a webhook's definition (the REST and TOML
keys), :mod:`~tidelog.webhooks.signing` signs requests the Standard Webhooks way,
:mod:`~tidelog.webhooks.delivery` delivers one webhook's events (retries, dead
letters, 410), and :mod:`~tidelog.webhooks.service` keeps the webhooks of a
server: stored in the log's state, one delivery task each.
"""

from tidelog.webhooks.service import WebhookService
from tidelog.webhooks.spec import WebhookError, WebhookSpec

__all__ = ["WebhookError", "WebhookService", "WebhookSpec"]
