// Overview: node, storage, traffic, live rate charts (GET /v1/overview/stream).
"use strict";

import {
  LiveChart, api, el, every, fmtBytes, fmtDuration, fmtRate, fmtSeconds, fmtTime, registerSection, stream,
  table,
} from "../lib.js";

function card(title, id) {
  return el("section.card", { id }, el("h3", {}, title), el("div.body"));
}

function facts(pairs) {
  return el("dl", {}, pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { dataset: { fact: k } }, v)]));
}

function clusterView(cluster) {
  if (!cluster.shared) {
    return el("p.muted", {}, `single node ${cluster.node}: its storage is not shared (no cluster)`);
  }
  const open = (connections) => Object.values(connections || {}).reduce((a, b) => a + b, 0);
  return table(["node", "host", "state", "connections", "position", "behind (events)", "last seen"],
    cluster.nodes.map((n) => [
      n.id === cluster.node ? `${n.id} (this node)` : n.id, n.host ?? "–",
      n.alive ? "alive" : el("span.error", {}, "down"),
      open(n.connections), n.position ?? "–", n.behind ?? "–", fmtTime(n.seen_at)]), "node");
}

function render(main) {
  const status = el("span.status", { id: "overview-status" }, "connecting…");
  main.append(
    el("h2", {}, "Overview ", status),
    el("div.grid", {},
      card("Node", "node"), card("Storage", "storage"), card("Connections", "connections"),
      card("Commit latency", "commit"), card("Engine", "engine")),
    el("section.card.wide", { id: "cluster" }, el("h3", {}, "Cluster nodes"), el("div.body")),
    el("section.card.wide", { id: "links" }, el("h3", {}, "Mesh links"), el("div.body")),
    el("section.card.wide", {}, el("h3", {}, "Events per second"), el("div.chart", { id: "rate-chart" })),
    el("section.card.wide", {}, el("h3", {}, "Commit latency (p99 per interval, ms)"),
      el("div.chart", { id: "latency-chart" })),
  );
  const rates = new LiveChart(main.querySelector("#rate-chart"), ["published", "delivered"], { unit: "/s" });
  const latency = new LiveChart(main.querySelector("#latency-chart"), ["p99", "mean"], { unit: " ms" });
  const body = (id) => main.querySelector(`#${id} .body`);

  function update(o) {
    status.textContent = `live · ${fmtTime(o.time)}`;
    status.dataset.ticks = String(Number(status.dataset.ticks || 0) + 1);
    body("node").replaceChildren(facts([
      ["node", o.node.id || o.node.host],
      ["version", o.node.version],
      ["uptime", fmtDuration(o.node.uptime_seconds)],
      ["listeners", Object.entries(o.listeners).map(([k, v]) => `${k} ${v}`).join(", ") || "–"],
    ]));
    const s = o.storage;
    const disk = s.disk ? `${fmtBytes(s.disk.free)} free of ${fmtBytes(s.disk.total)}` : "–";
    const retention = [s.retention_ms ? `${fmtDuration(s.retention_ms / 1000)}` : null,
      s.retention_bytes ? fmtBytes(s.retention_bytes) : null].filter(Boolean).join(", ") || "keep everything";
    body("storage").replaceChildren(facts([
      ["backend", s.url || s.backend],
      ["size", fmtBytes(s.bytes)],
      ["events", `${(s.next_offset - s.first_offset).toLocaleString()} (offsets ${s.first_offset}–${s.next_offset})`],
      ["oldest", fmtTime(s.first_timestamp)],
      ["newest", fmtTime(s.last_timestamp)],
      ["segments", s.segments],
      ["retention", retention],
      ["disk", disk],
    ]));
    const protocols = Object.entries(o.connections);
    body("connections").replaceChildren(protocols.length
      ? table(["protocol", "open"], protocols.map(([p, n]) => [p, n]))
      : el("p.muted", {}, "no connections"));
    body("commit").replaceChildren(facts([
      ["last", fmtSeconds(o.commit.last_seconds)],
      ["mean", fmtSeconds(o.commit.mean_seconds)],
      ["p99 (interval)", fmtSeconds(o.commit.p99_seconds)],
      ["max", fmtSeconds(o.commit.max_seconds)],
      ["pending", o.commit.pending_events],
    ]));
    body("engine").replaceChildren(facts([
      ["published", o.totals.published.toLocaleString()],
      ["publish rate", `${fmtRate(o.rates.published)}/s`],
      ["delivery rate", `${fmtRate(o.rates.deliveries)}/s`],
      ["topics", o.topics],
      ["subscriptions", o.subscriptions],
      ["feeds", `${o.feeds} (${o.feeds_catching_up} catching up)`],
      ["sessions", o.sessions],
      ["retained", o.retained],
    ]));
    const t = o.time / 1000;
    if (o.rates.published !== null) rates.push(t, [o.rates.published, o.rates.deliveries]);
    const p99 = o.commit.p99_seconds === null ? null : o.commit.p99_seconds * 1000;
    const mean = o.commit.mean_seconds === null ? null : o.commit.mean_seconds * 1000;
    if (p99 !== null || mean !== null) latency.push(t, [p99, mean]);
  }

  const live = stream("/v1/overview/stream", { interval_ms: 1000 }, (name, data) => {
    if (name === "overview") update(data);
  }, { onState: (state, error) => {
    if (state === "error") status.textContent = `disconnected: ${error.message}`;
  } });
  // the node's mesh links (docs/mesh.md): state and lag, every 5 s
  const stopLinks = every(5000, async () => {
    const mesh = await api("/v1/links");
    body("links").replaceChildren(mesh.links.length
      ? table(["link", "direction", "peer", "state", "lag (events)", "lag (ms)", "in", "out", "gaps"],
        mesh.links.map((l) => [l.name, l.direction, l.peer ?? "–", l.state, l.lag ?? "–",
          l.lag_ms ?? "–", l.events_in ?? 0, l.events_out ?? 0, l.gaps ?? 0]), "link")
      : el("p.muted", {}, `no links on node ${mesh.node ?? "–"} (or none you may see)`));
  });
  // the nodes serving this log (docs/cluster.md): several on a shared kafka:// log
  const stopCluster = every(5000, async () => {
    body("cluster").replaceChildren(clusterView(await api("/v1/cluster")));
  });
  return () => { live.close(); stopLinks(); stopCluster(); rates.destroy(); latency.destroy(); };
}

registerSection({ id: "overview", title: "Overview", order: 10, render });
