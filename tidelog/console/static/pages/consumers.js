// Consumers: durable cursors (GET /v1/cursors) with pending and lag over time, a peek
// at the next events, and reset (commit to earliest, latest, an offset or a time) and
// delete, each confirmed; consumer groups (the explicit-ack cursors of the same listing:
// leased, redelivered, dead-lettered; the same peek, reset and delete) and webhooks
// (GET /v1/webhooks: delivery state, lag, last success and error; delete, confirmed) in
// their own sections.
"use strict";

import {
  LiveChart, api, confirmAction, el, every, fmtTime, payloadBytes, registerSection,
  renderPayload, toast,
} from "../lib.js";

const REFRESH_MS = 2000;
const CHART_SERIES = 8;

function cursorPath(cursor, action = "") {
  return `/v1/cursors/${encodeURIComponent(cursor.name)}${action}`;
}

function ownerQuery(cursor) {
  // the caller's own cursor, or (admin_users) another user's: the API accepts both
  return cursor.owner ? { owner: cursor.owner } : {};
}

/** Consumer groups: the explicit-ack cursors, with their leases and dead letters. */
function groupsTable(cursors, actions) {
  const groups = cursors.filter((c) => c.ack_policy === "explicit");
  if (!groups.length) {
    return el("p.muted", {}, "no consumer groups (a cursor with ack_policy \"explicit\")");
  }
  const columns = ["name", "owner", "filter", "position", "pending", "leased", "redelivered",
    "dead lettered", "dead-letter topic", "ack wait", "max deliver", ""];
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, groups.map((g) => el("tr.group", { dataset: { name: g.name } },
      el("td.name", {}, g.name), el("td", {}, g.owner), el("td", {}, g.filter ?? "#"),
      el("td.position", {}, g.position), el("td.pending", {}, g.pending),
      el("td.leased", {}, g.leased), el("td.redelivered", {}, g.redelivered),
      el("td.dead-lettered", {}, g.dead_lettered), el("td", {}, g.dead_letter_topic),
      el("td", {}, `${g.ack_wait} s`), el("td", {}, g.max_deliver ?? "∞"),
      el("td.actions", {}, actions(g))))));
}

/** Webhooks with their delivery status. */
function webhooksTable(webhooks, remove) {
  if (!webhooks.length) {
    return el("p.muted", {}, "no webhooks (PUT /v1/webhooks/{name}, `tidelog webhooks`, or [[webhook]] in the configuration)");
  }
  const columns = ["name", "owner", "url", "filter", "state", "delivered", "lag", "attempts",
    "dead lettered", "last success", "last error", ""];
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, webhooks.map((w) => el("tr.webhook", { dataset: { name: w.name } },
      el("td.name", {}, w.name), el("td", {}, w.owner), el("td.url", {}, w.url),
      el("td", {}, w.filter ?? "#"),
      el("td.state", { dataset: { state: w.disabled ? "disabled" : w.status.state } },
        w.disabled ? "disabled" : w.status.state),
      el("td.delivered", {}, w.status.delivered), el("td.lag", {}, w.status.lag),
      el("td", {}, w.status.attempts), el("td.dead-lettered", {}, w.status.dead_lettered),
      el("td", {}, w.status.last_success ? fmtTime(w.status.last_success) : "–"),
      el("td.error", {}, w.status.last_error
        ? `${w.status.last_error} (${fmtTime(w.status.last_error_at)})` : "–"),
      el("td.actions", {},
        el("button", { type: "button", class: "delete danger", onclick: () => remove(w) }, "delete"))))));
}

function render(main) {
  const body = el("div", { id: "cursor-table" });
  const groupsBody = el("div", { id: "group-table" });
  const webhooksBody = el("div", { id: "webhook-table" });
  const peek = el("div.card", { id: "peek", hidden: true });
  const chartBox = el("div.chart", { id: "lag-chart" });
  main.append(el("h2", {}, "Consumers"),
    el("section.card.wide", {}, el("h3", {}, "Cursors"), body),
    peek,
    el("section.card.wide", {}, el("h3", {}, "Consumer groups"), groupsBody),
    el("section.card.wide", {}, el("h3", {}, "Webhooks"), webhooksBody),
    el("section.card.wide", {}, el("h3", {}, "Pending events over time"), chartBox));

  let chart = null;
  let chartNames = [];

  function drawChart(cursors) {
    const names = cursors.slice(0, CHART_SERIES).map((c) => `${c.owner}/${c.name}`);
    if (names.join("\n") !== chartNames.join("\n")) {
      if (chart) chart.destroy();
      chartBox.replaceChildren();
      chartNames = names;
      chart = names.length ? new LiveChart(chartBox, names, { keep: 600 }) : null;
    }
    if (chart) chart.push(Date.now() / 1000, cursors.slice(0, CHART_SERIES).map((c) => c.pending));
  }

  async function reset(cursor) {
    const choice = await chooseReset(cursor);
    if (!choice) return;
    let offset;
    if (choice.kind === "earliest" || choice.kind === "latest") {
      const overview = await api("/v1/overview");
      offset = choice.kind === "earliest" ? overview.storage.first_offset : overview.storage.next_offset;
    } else if (choice.kind === "time") {
      offset = (await api("/v1/offsets", { query: { time: choice.value, filter: cursor.filter || "#" } })).offset;
    } else {
      offset = Number(choice.value);
    }
    if (!await confirmAction(`Move cursor "${cursor.name}" from ${cursor.position} to offset ${offset}? ` +
        "Its consumers will read from there.")) return;
    await api(cursorPath(cursor, "/commit"), { method: "POST", body: { offset },
      query: ownerQuery(cursor) });
    toast(`cursor ${cursor.name} now at ${offset}`);
    refresh();
  }

  async function remove(cursor) {
    if (!await confirmAction(`Delete cursor "${cursor.name}" (owner ${cursor.owner})? ` +
        "Its position is lost.")) return;
    await api(cursorPath(cursor), { method: "DELETE", query: ownerQuery(cursor) });
    toast(`cursor ${cursor.name} deleted`);
    refresh();
  }

  async function showPeek(cursor) {
    // a plain read from the committed position: a fetch would lease what it returns
    // (ack_policy "explicit") and the console must not take events from a group's members
    const page = await api("/v1/events", { query: {
      filter: cursor.filter || "#", from_offset: cursor.position, limit: 10 } });
    peek.hidden = false;
    peek.replaceChildren(el("h3", {}, `Next events of ${cursor.name} (not committed)`),
      page.events.length ? el("table", { id: "peek-events" }, el("tbody", {}, page.events.map((e) =>
        el("tr.event", {}, el("td", {}, e.offset), el("td", {}, fmtTime(e.timestamp)),
          el("td", {}, e.topic), el("td", {}, el("pre.payload", {}, renderPayload(payloadBytes(e), "text")))))))
        : el("p.muted", {}, "nothing to fetch"));
  }

  async function removeWebhook(webhook) {
    if (!await confirmAction(`Delete webhook "${webhook.name}" (owner ${webhook.owner})? ` +
        "Its deliveries stop and its position is lost.")) return;
    await api(`/v1/webhooks/${encodeURIComponent(webhook.name)}`, { method: "DELETE",
      query: webhook.owner ? { owner: webhook.owner } : {} });
    toast(`webhook ${webhook.name} deleted`);
    refresh();
  }

  function guard(action) {
    return (cursor) => action(cursor).catch((error) => toast(error.message, "error"));
  }

  function cursorActions(c) {
    return [
      el("button", { type: "button", class: "peek", onclick: () => guard(showPeek)(c) }, "peek"),
      el("button", { type: "button", class: "reset", onclick: () => guard(reset)(c) }, "reset…"),
      el("button", { type: "button", class: "delete danger", onclick: () => guard(remove)(c) }, "delete")];
  }

  async function refresh() {
    const cursors = (await api("/v1/cursors")).cursors;
    body.replaceChildren(cursors.length ? el("table", {},
      el("thead", {}, el("tr", {}, ["name", "owner", "filter", "position", "pending", "lag", ""].map(
        (c) => el("th", {}, c)))),
      el("tbody", {}, cursors.map((c) => el("tr.cursor", { dataset: { name: c.name } },
        el("td.name", {}, c.name), el("td", {}, c.owner), el("td", {}, c.filter ?? "#"),
        el("td.position", {}, c.position), el("td.pending", {}, c.pending), el("td.lag", {}, c.lag),
        el("td.actions", {}, cursorActions(c))))))
      : el("p.muted", {}, "no cursors (create one with PUT /v1/cursors/{name} or `tidelog cursors create`)"));
    groupsBody.replaceChildren(groupsTable(cursors, cursorActions));
    drawChart(cursors);
    try {
      webhooksBody.replaceChildren(webhooksTable((await api("/v1/webhooks")).webhooks, guard(removeWebhook)));
    } catch (error) {
      webhooksBody.replaceChildren(el("p.muted", {}, `webhooks: ${error.message}`));
    }
  }

  const stop = every(REFRESH_MS, refresh);
  return () => { stop(); if (chart) chart.destroy(); };
}

/** Ask where to move a cursor: {kind: earliest|latest|offset|time, value}. */
function chooseReset(cursor) {
  const kind = el("select", { id: "reset-kind" },
    ["earliest", "latest", "offset", "time"].map((k) => el("option", { value: k }, k)));
  const offset = el("input", { type: "number", min: 0, id: "reset-offset", value: cursor.position });
  const time = el("input", { type: "datetime-local", step: "0.001", id: "reset-time" });
  const dialog = el("dialog", { id: "reset-dialog" }, el("form", { method: "dialog" },
    el("h3", {}, `Reset cursor ${cursor.name}`),
    el("label", {}, "to ", kind), el("label", {}, " offset ", offset), el("label", {}, " time ", time),
    el("p", {}, el("button", { value: "cancel" }, "cancel"), " ",
      el("button", { value: "ok", id: "reset-next" }, "next…"))));
  document.body.append(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const ok = dialog.returnValue === "ok";
      dialog.remove();
      if (!ok) return resolve(null);
      const value = kind.value === "time" ? new Date(time.value).getTime() : offset.value;
      resolve({ kind: kind.value, value });
    }, { once: true });
    dialog.showModal();
  });
}

registerSection({ id: "consumers", title: "Consumers", order: 30, render });
