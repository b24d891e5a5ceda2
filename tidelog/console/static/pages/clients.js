// Clients: connected MQTT clients and stored sessions (GET /v1/clients), with
// disconnect (DELETE /v1/clients/{id}, security.admin_users only), confirmed.
"use strict";

import { api, confirmAction, el, every, fmtTime, registerSection, table, toast } from "../lib.js";

const REFRESH_MS = 3000;
const LEVELS = { 3: "3.1", 4: "3.1.1", 5: "5.0" };

function render(main) {
  const summary = el("div", { id: "connection-summary" });
  const clients = el("div", { id: "client-table" });
  const sessions = el("div", { id: "session-table" });
  main.append(el("h2", {}, "Clients"),
    el("section.card.wide", {}, el("h3", {}, "Connections by protocol"), summary),
    el("section.card.wide", {}, el("h3", {}, "MQTT clients"), clients),
    el("section.card.wide", {}, el("h3", {}, "Stored sessions (client away)"), sessions));

  async function disconnect(client) {
    if (!await confirmAction(`Disconnect MQTT client "${client.client_id}" (${client.address})? ` +
        "It may reconnect; its will is sent.")) return;
    try {
      await api(`/v1/clients/${encodeURIComponent(client.client_id)}`, { method: "DELETE" });
      toast(`${client.client_id} disconnected`);
    } catch (error) {
      toast(error.message, "error");
    }
    refresh();
  }

  async function refresh() {
    const listing = await api("/v1/clients");
    const protocols = Object.entries(listing.connections);
    summary.replaceChildren(protocols.length
      ? table(["protocol", "open"], protocols) : el("p.muted", {}, "no connections"));
    clients.replaceChildren(listing.clients.length ? el("table", {},
      el("thead", {}, el("tr", {}, ["client id", "user", "MQTT", "transport", "address", "connected",
        "keep alive", "persistent", "subscriptions", "in flight", ""].map((c) => el("th", {}, c)))),
      el("tbody", {}, listing.clients.map((c) => el("tr.client", { dataset: { client: c.client_id } },
        el("td.id", {}, c.client_id), el("td", {}, c.owner ?? "–"), el("td", {}, LEVELS[c.protocol_level] ?? c.protocol_level),
        el("td", {}, c.transport), el("td", {}, c.address), el("td", {}, fmtTime(c.connected_at)),
        el("td", {}, c.keep_alive ?? "–"), el("td", {}, c.persistent ? "yes" : "no"),
        el("td.subs", {}, c.subscriptions.join(", ") || "–"), el("td", {}, c.inflight),
        el("td", {}, el("button", { type: "button", class: "disconnect danger",
          disabled: !listing.may_disconnect,
          title: listing.may_disconnect ? null : "only security.admin_users may disconnect clients",
          onclick: () => disconnect(c) }, "disconnect"))))))
      : el("p.muted", {}, "no MQTT clients connected"));
    sessions.replaceChildren(listing.sessions.length
      ? table(["client id", "user", "subscriptions", "disconnected", "expires"],
        listing.sessions.map((s) => [s.client_id, s.owner ?? "–", s.subscriptions.join(", ") || "–",
          fmtTime(s.disconnected_at), s.expires_at === null ? "never" : fmtTime(s.expires_at)]), "session")
      : el("p.muted", {}, "no stored sessions"));
  }

  return every(REFRESH_MS, refresh);
}

registerSection({ id: "clients", title: "Clients", order: 40, render });
