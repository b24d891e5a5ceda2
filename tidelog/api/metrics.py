"""Prometheus metrics: a collector that reads the broker's statistics at scrape time.

Nothing is counted per message for metrics: the engine already keeps counters
(:meth:`Broker.statistics`), and this collector turns a snapshot of them into
Prometheus families when ``/metrics`` is scraped. Cursor positions live in
storage (an async read), so the endpoint loads them first and hands them to
:meth:`BrokerCollector.snapshot`.

Each app has its own :class:`CollectorRegistry` (several brokers may run in
one process, as in the tests).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from tidelog.engine import Broker, Cursor
from tidelog.engine.group_commit import BATCH_EVENTS_BUCKETS, COMMIT_SECONDS_BUCKETS
from tidelog.traffic import TrafficCounters

if TYPE_CHECKING:
    from tidelog.webhooks import WebhookService

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PROTOCOLS = ("mqtt", "websocket", "sse")
"""Protocol label values, always reported (0 until used)."""


def _histogram(
    name: str, doc: str, bounds: tuple[float, ...], counts: list[int], total: float
) -> HistogramMetricFamily:
    """A Prometheus histogram from per-bucket counts (the writer's, not cumulative)."""
    cumulative: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=total)


class BrokerCollector(Collector):
    def __init__(self, broker: Broker, traffic: TrafficCounters) -> None:
        self.broker = broker
        self.traffic = traffic
        self._cursors: Sequence[tuple[Cursor, int]] = ()
        self._labelled = False
        self.webhooks: WebhookService | None = None
        """The server's webhooks (set by the app), reported per webhook."""
        self._nodes: Sequence[dict[str, Any]] = ()

    def cluster_snapshot(self, nodes: Sequence[dict[str, Any]]) -> None:
        """Set the node records (``ClusterRegistry.nodes``) the next collection reports
        (read from storage by the caller: collection itself cannot await)."""
        self._nodes = nodes

    def _cluster(self) -> Iterator[Metric]:
        """The nodes serving the log, as every node sees them (docs/cluster.md)."""
        nodes = self._nodes
        yield GaugeMetricFamily(
            "tidelog_cluster_nodes", "Nodes with a record (alive or not).", value=len(nodes)
        )
        yield GaugeMetricFamily(
            "tidelog_cluster_nodes_alive",
            "Nodes that announced themselves within three announce intervals.",
            value=sum(1 for node in nodes if node.get("alive")),
        )
        alive = GaugeMetricFamily(
            "tidelog_cluster_node_alive", "1 while a node announces itself.", labels=["node"]
        )
        behind = GaugeMetricFamily(
            "tidelog_cluster_node_behind",
            "Offsets between the log head and what a node had routed (its log lag).",
            labels=["node"],
        )
        connections = GaugeMetricFamily(
            "tidelog_cluster_node_connections",
            "Open connections of a node (all protocols), as it last announced.",
            labels=["node"],
        )
        for node in nodes:
            label = [str(node.get("id"))]
            alive.add_metric(label, 1 if node.get("alive") else 0)
            behind.add_metric(label, node.get("behind", 0))
            counts = node.get("connections") or {}
            connections.add_metric(label, sum(counts.values()) if isinstance(counts, dict) else 0)
        yield alive
        yield behind
        yield connections
        yield CounterMetricFamily(
            "tidelog_cluster_shared_handed_back",
            "Shared-group events this node delivered for a node that left the group.",
            value=self.broker.shares.handed_back,
        )

    def _webhooks(self) -> Iterator[Metric]:
        """Per webhook (every webhook: names are operator configuration): requests,
        delivered events, dead letters, and whether it is delivering."""
        if self.webhooks is None:
            return
        families = {
            name: CounterMetricFamily(f"tidelog_webhook_{name}", doc, labels=["webhook", "owner"])
            for name, doc in (
                ("attempts", "Webhook requests sent, retries included."),
                ("delivered", "Events a webhook's endpoint acknowledged (2xx)."),
                ("dead_lettered", "Events a webhook sent to its dead-letter topic."),
            )
        }
        up = GaugeMetricFamily(
            "tidelog_webhook_up",
            "1 while a webhook delivers (active or retrying), 0 when disabled or failed.",
            labels=["webhook", "owner"],
        )
        for spec, status in self.webhooks.list():
            labels = [spec.name, spec.owner]
            families["attempts"].add_metric(labels, status.attempts)
            families["delivered"].add_metric(labels, status.delivered)
            families["dead_lettered"].add_metric(labels, status.dead_lettered)
            up.add_metric(labels, 1 if status.state in ("active", "retrying", "starting") else 0)
        yield from families.values()
        yield up

    def snapshot(self, cursors: Sequence[tuple[Cursor, int]], *, labelled: bool = False) -> None:
        """Set the cursors the next collection reports, each with its pending count
        (counted by the caller: collection itself cannot await); ``labelled``: one
        series per cursor (its name and owner reach the scraper)."""
        self._cursors = cursors
        self._labelled = labelled

    def collect(self) -> Iterator[Metric]:
        stats = self.broker.statistics()
        writer = stats.writer
        log = stats.log

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"tidelog_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"tidelog_{name}", doc, value=value)

        yield counter("published_events", "Events committed to the log.", stats.published)
        yield counter(
            "published_bytes", "Payload bytes of the events committed.", writer.payload_bytes
        )
        yield counter("deliveries", "Events handed to live subscriber feeds.", stats.deliveries)
        yield counter(
            "delivered_bytes",
            "Payload bytes handed to live subscriber feeds.",
            stats.delivered_bytes,
        )
        yield counter(
            "catch_ups",
            "Times a slow subscriber fell behind and switched to reading the log.",
            stats.catch_ups,
        )
        yield gauge("feeds", "Open subscriber feeds.", stats.feeds)
        yield gauge(
            "feeds_catching_up",
            "Feeds that fell behind and read from the log.",
            stats.feeds_catching_up,
        )
        yield gauge(
            "waiting_reads",
            "Reads long-polling for a first event (REST long-polls, cursor fetches).",
            stats.waiting_reads,
        )
        yield gauge("subscriptions", "Live topic-filter subscriptions.", stats.subscriptions)
        yield gauge("retained_messages", "Retained messages held.", stats.retained)
        yield gauge("sessions", "Stored MQTT sessions.", stats.sessions)
        yield gauge(
            "topics", "Topics published to since the broker started.", len(stats.topic_counts)
        )

        yield counter("commit_batches", "Group commits (one transaction each).", writer.batches)
        yield counter(
            "commit_seconds", "Time spent committing batches.", writer.commit_seconds_total
        )
        yield gauge(
            "commit_last_batch_events", "Events in the last commit.", writer.last_batch_events
        )
        yield gauge("commit_max_batch_events", "Largest commit so far.", writer.max_batch_events)
        yield gauge(
            "commit_last_seconds", "Duration of the last commit.", writer.last_commit_seconds
        )
        yield gauge("commit_max_seconds", "Longest commit so far.", writer.max_commit_seconds)
        yield gauge(
            "commit_pending_events", "Events waiting to be committed.", writer.pending_events
        )
        yield counter(
            "commit_failed_submissions", "Submissions the log refused.", writer.failed_submissions
        )
        yield _histogram(
            "tidelog_commit_batch_events",
            "Events per group commit.",
            BATCH_EVENTS_BUCKETS,
            writer.batch_events_histogram,
            writer.events,
        )
        yield _histogram(
            "tidelog_commit_duration_seconds",
            "Duration of each group commit (append and fsync).",
            COMMIT_SECONDS_BUCKETS,
            writer.commit_seconds_histogram,
            writer.commit_seconds_total,
        )

        net = self.traffic
        yield gauge("start_time_seconds", "When the broker started (Unix time).", net.started_at)
        for name, doc, values, kind in (
            ("connections", "Open connections.", net.connections, "gauge"),
            ("connections_opened", "Connections accepted.", net.connections_total, "counter"),
            (
                "connections_rejected",
                "Connections refused (connection limit, CONNECT refused).",
                net.rejected_connections,
                "counter",
            ),
            ("malformed_packets", "Malformed packets received.", net.malformed_packets, "counter"),
            (
                "rejected_packets",
                "Well-formed packets refused (e.g. a publish the log refused).",
                net.rejected_packets,
                "counter",
            ),
            ("packets_received", "Packets received.", net.packets_received, "counter"),
            ("publishes_received", "PUBLISH packets received.", net.publishes_received, "counter"),
            ("publishes_sent", "PUBLISH packets sent.", net.publishes_sent, "counter"),
            ("received_bytes", "Bytes read from client sockets.", net.bytes_received, "counter"),
            ("sent_bytes", "Bytes written to client sockets.", net.bytes_sent, "counter"),
        ):
            by_protocol: GaugeMetricFamily | CounterMetricFamily
            if kind == "gauge":
                by_protocol = GaugeMetricFamily(f"tidelog_{name}", doc, labels=["protocol"])
            else:
                by_protocol = CounterMetricFamily(f"tidelog_{name}", doc, labels=["protocol"])
            for protocol in sorted({*PROTOCOLS, *values}):
                by_protocol.add_metric([protocol], values[protocol])
            yield by_protocol

        backend = {"backend": log.backend}
        for name, doc, value, kind in (
            ("log_first_offset", "First offset still stored.", log.first_offset, "gauge"),
            ("log_next_offset", "Offset the next event gets.", log.next_offset, "gauge"),
            ("log_bytes", "Bytes the stored events take.", log.bytes, "gauge"),
            ("log_segments", "Log segments.", log.segments, "gauge"),
            ("log_appends", "Append transactions.", log.appends, "counter"),
            ("log_appended_bytes", "Bytes appended.", log.appended_bytes, "counter"),
            ("log_reads", "Reads from the log.", log.reads, "counter"),
            ("log_read_events", "Events read from the log.", log.read_events, "counter"),
        ):
            family: GaugeMetricFamily | CounterMetricFamily
            if kind == "gauge":
                family = GaugeMetricFamily(f"tidelog_{name}", doc, labels=["backend"])
            else:
                family = CounterMetricFamily(f"tidelog_{name}", doc, labels=["backend"])
            family.add_metric([backend["backend"]], value)
            yield family

        cursors = self._cursors
        yield gauge(
            "cursors", "Durable cursors (the scraper's own, unless it sees all).", len(cursors)
        )
        groups = [g.statistics() for g in self.broker.consumers.each()]
        yield gauge(
            "consumer_leased",
            "Events leased to consumer-group members now (explicit cursors).",
            sum(g.leased for g in groups),
        )
        yield counter(
            "consumer_redelivered",
            "Events delivered again after a lease ended or a nak (since start).",
            sum(g.redelivered for g in groups),
        )
        yield counter(
            "consumer_dead_lettered",
            "Events sent to a dead-letter topic.",
            sum(g.dead_lettered for g in groups),
        )
        yield from self._webhooks()
        yield from self._cluster()
        if not self._labelled:
            return
        per_cursor = {
            name: GaugeMetricFamily(f"tidelog_cursor_{name}", doc, labels=["cursor", "owner"])
            for name, doc in (
                ("leased", "Events of an explicit cursor leased now."),
                ("redelivered", "Redeliveries of an explicit cursor."),
                ("dead_lettered", "Dead letters of an explicit cursor."),
            )
        }
        for cursor, _ in cursors:
            group = self.broker.consumers.loaded(cursor.key) if cursor.explicit else None
            if group is not None:
                counts = group.statistics()
                labels = [cursor.name, cursor.owner]
                per_cursor["leased"].add_metric(labels, counts.leased)
                per_cursor["redelivered"].add_metric(labels, counts.redelivered)
                per_cursor["dead_lettered"].add_metric(labels, counts.dead_lettered)
        yield from per_cursor.values()
        lag = GaugeMetricFamily(
            "tidelog_cursor_lag",
            "Offsets between a cursor and the log head.",
            labels=["cursor", "owner"],
        )
        pending = GaugeMetricFamily(
            "tidelog_cursor_pending",
            "Events matching a cursor's filter that are not yet acknowledged.",
            labels=["cursor", "owner"],
        )
        for cursor, count in cursors:
            lag.add_metric([cursor.name, cursor.owner], cursor.lag)
            pending.add_metric([cursor.name, cursor.owner], count)
        yield pending
        yield lag


def make_registry(
    broker: Broker, traffic: TrafficCounters
) -> tuple[CollectorRegistry, BrokerCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = BrokerCollector(broker, traffic)
    registry.register(collector)
    return registry, collector


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
