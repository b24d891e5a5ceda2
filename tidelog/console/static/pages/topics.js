// Topics: the topic tree with each topic's last event (GET /v1/topics?last=true), a live tail (SSE /v1/events/stream) and a
// replay by time or offset (GET /v1/offsets, GET /v1/events) that can go on live from
// where it stopped, without a gap (the stream starts at the replay's end offset).
"use strict";

import {
  api, el, every, fmtRate, fmtTime, payloadBytes, registerSection, renderPayload, stream, toast,
} from "../lib.js";

const MAX_ROWS = 2000;
const PAGE = 500;
const TREE_REFRESH_MS = 5000;
const FLUSH_MS = 100;
const PREVIEW_CHARS = 60;

function buildTree(topics) {
  const root = { name: "", path: "", children: new Map(), count: 0, own: 0, rate: 0 };
  for (const t of topics) {
    let node = root;
    node.count += t.count;
    node.rate += t.rate || 0;
    const levels = t.topic.split("/");
    levels.forEach((level, i) => {
      if (!node.children.has(level)) {
        node.children.set(level, { name: level, path: levels.slice(0, i + 1).join("/"),
          children: new Map(), count: 0, own: 0, rate: 0 });
      }
      node = node.children.get(level);
      node.count += t.count;
      node.rate += t.rate || 0;
    });
    node.own = t.count;
    node.leaf = true;
    node.last = t.last_event || null;
  }
  return root;
}

function renderTree(node, select, depth = 0) {
  const items = [...node.children.values()].sort((a, b) => a.name.localeCompare(b.name));
  return el("ul", {}, items.map((child) => {
    const hasChildren = child.children.size > 0;
    const filter = hasChildren ? `${child.path}/#` : child.path;
    const rate = child.rate > 0 ? ` · ${fmtRate(child.rate)}/s` : "";
    return el("li", {},
      el("a.topic", { href: "#", dataset: { topic: child.path, filter },
        onclick: (e) => { e.preventDefault(); select(child.leaf && !hasChildren ? child.path : filter); } },
        el("span.name", {}, child.name || "(empty)"),
        el("span.count", {}, ` ${child.count.toLocaleString()}${rate}`)),
      child.last ? lastEvent(child.last) : null,
      hasChildren && depth < 12 ? renderTree(child, select, depth + 1) : null);
  }));
}

/** A topic's newest event in the tree: its time and the start of its payload. */
function lastEvent(event) {
  const text = renderPayload(payloadBytes(event), "text").replace(/\s+/g, " ");
  const preview = text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS)}…` : text;
  return el("div.last-event", { dataset: { offset: event.offset }, title: `offset ${event.offset}` },
    el("span.time", {}, fmtTime(event.timestamp)), " ", el("code.preview", {}, preview));
}

function toMs(input) {
  // datetime-local has no zone: the browser's local time
  return input.value ? new Date(input.value).getTime() : null;
}

function render(main, params) {
  const search = el("input", { type: "search", id: "topic-search", placeholder: "search topics" });
  const tree = el("div.tree", { id: "topic-tree" });
  const filter = el("input", { id: "filter", value: params.get("filter") || "#", size: 40 });
  const mode = el("select", { id: "mode" },
    el("option", { value: "live" }, "live tail"), el("option", { value: "replay" }, "replay"));
  const fromTime = el("input", { type: "datetime-local", step: "0.001", id: "from-time" });
  const toTime = el("input", { type: "datetime-local", step: "0.001", id: "to-time" });
  const fromOffset = el("input", { type: "number", min: 0, id: "from-offset", placeholder: "offset" });
  const toOffset = el("input", { type: "number", min: 0, id: "to-offset", placeholder: "offset" });
  const follow = el("input", { type: "checkbox", id: "follow" });
  const view = el("select", { id: "view" }, ["text", "json", "hex"].map((v) => el("option", { value: v }, v)));
  const startButton = el("button", { type: "submit", id: "start" }, "start");
  const stopButton = el("button", { type: "button", id: "stop" }, "stop");
  const status = el("span.status", { id: "tail-status" }, "stopped");
  const rowsBody = el("tbody", { id: "events" });
  const replayFields = el("fieldset.replay", { hidden: true },
    el("label", {}, "from ", fromTime), el("label", {}, " to ", toTime),
    el("span.muted", {}, " or offsets "), fromOffset, "–", toOffset,
    el("label", {}, follow, " then follow live"));
  const form = el("form.controls", { id: "tail-form" },
    el("label", {}, "filter ", filter), " ", mode, " ", replayFields, " ",
    el("label", {}, "payload ", view), " ", startButton, stopButton, " ", status);

  main.append(el("h2", {}, "Topics"), el("div.split", {},
    el("aside.card", {}, search, tree),
    el("section.card.grow", {}, form,
      el("div.events", {}, el("table", {},
        el("thead", {}, el("tr", {}, ["offset", "time", "topic", "qos", "payload", "properties"].map(
          (c) => el("th", {}, c)))), rowsBody)))));

  // -- the tree -------------------------------------------------------------------------
  let topics = [];
  let previous = new Map();
  let previousAt = 0;
  function drawTree() {
    const term = search.value.trim().toLowerCase();
    const shown = term ? topics.filter((t) => t.topic.toLowerCase().includes(term)) : topics;
    tree.replaceChildren(shown.length ? renderTree(buildTree(shown), select)
      : el("p.muted", {}, term ? "no topic matches" : "no topics stored yet"));
  }
  const stopTree = every(TREE_REFRESH_MS, async () => {
    const now = performance.now();
    const listing = (await api("/v1/topics", { query: { last: true } })).topics;
    const elapsed = (now - previousAt) / 1000;
    topics = listing.map((t) => ({ ...t, rate: previous.has(t.topic) && elapsed > 0
      ? Math.max(0, (t.count - previous.get(t.topic)) / elapsed) : 0 }));
    previous = new Map(listing.map((t) => [t.topic, t.count]));
    previousAt = now;
    drawTree();
  });
  search.addEventListener("input", drawTree);

  function select(topicFilter) {
    filter.value = topicFilter;
    start();
  }

  // -- the events -----------------------------------------------------------------------
  let rows = [];
  let live = null;
  let run = 0;

  function addEvents(events) {
    const mode = view.value;
    const fragment = document.createDocumentFragment();
    for (const event of events) {
      const bytes = payloadBytes(event);
      const payloadCell = el("pre.payload", {}, renderPayload(bytes, mode));
      const props = Object.keys(event.properties || {}).length
        ? el("pre.props", {}, JSON.stringify(event.properties)) : "";
      const node = el("tr.event", { dataset: { offset: event.offset } },
        el("td.offset", {}, event.offset), el("td.time", {}, fmtTime(event.timestamp)),
        el("td.topic", {}, event.topic),
        el("td", {}, `${event.qos}${event.retain ? " R" : ""}`),
        el("td", {}, payloadCell), el("td", {}, props));
      rows.push({ bytes, payloadCell, node });
      fragment.append(node);
    }
    rowsBody.append(fragment);
    while (rows.length > MAX_ROWS) rows.shift().node.remove();
  }

  view.addEventListener("change", () => {
    for (const row of rows) row.payloadCell.textContent = renderPayload(row.bytes, view.value);
  });
  mode.addEventListener("change", () => { replayFields.hidden = mode.value !== "replay"; });

  function stop() {
    run++;
    if (live) { live.close(); live = null; }
    status.textContent = "stopped";
  }

  function tail(topicFilter, from) {
    status.textContent = "subscribing…";
    // events are drawn in batches, at most every FLUSH_MS: a busy topic costs the
    // page one DOM update per batch, not one per event
    let pending = [];
    let timer = null;
    const flush = () => {
      timer = null;
      const batch = pending;
      pending = [];
      addEvents(batch.length > MAX_ROWS ? batch.slice(-MAX_ROWS) : batch);
    };
    live = stream("/v1/events/stream", { filter: topicFilter, from }, (name, event) => {
      pending.push(event);
      if (timer === null) timer = setTimeout(flush, FLUSH_MS);
    }, {
      onState: (state, error) => {
        status.textContent = state === "open" ? "live" : `disconnected: ${error.message}`;
        status.dataset.state = state;
      },
      resume: (lastId) => ({ from: `offset:${Number(lastId) + 1}` }),
    });
  }

  async function replay(topicFilter, mine) {
    let from = null;
    if (fromTime.value) from = (await api("/v1/offsets", { query: { time: toMs(fromTime), filter: topicFilter } })).offset;
    else if (fromOffset.value !== "") from = Number(fromOffset.value);
    let to = null;
    if (toTime.value) to = (await api("/v1/offsets", { query: { time: toMs(toTime), filter: topicFilter } })).offset;
    else if (toOffset.value !== "") to = Number(toOffset.value);
    else {  // the head now: the first offset after any time to come
      to = (await api("/v1/offsets", { query: { time: Date.now() + 864e5, filter: topicFilter } })).offset;
    }
    let position = from;
    let shown = 0;
    status.textContent = "replaying…";
    while (mine === run) {
      const page = await api("/v1/events", { query: {
        filter: topicFilter, from_offset: position, to_offset: to, limit: PAGE } });
      if (mine !== run) return;
      addEvents(page.events);
      shown += page.events.length;
      if (page.next_offset >= to || (!page.events.length && page.next_offset === position)) {
        position = page.next_offset;
        break;
      }
      position = page.next_offset;
      if (shown >= MAX_ROWS) break;
    }
    if (mine !== run) return;
    status.textContent = `replayed ${shown} events (offsets ${from ?? "first"}–${to})`;
    status.dataset.state = "replayed";
    if (follow.checked) tail(topicFilter, `offset:${Math.min(position, to)}`);
  }

  async function start(event) {
    if (event) event.preventDefault();
    stop();
    const mine = run;
    rows = [];
    rowsBody.replaceChildren();
    const topicFilter = filter.value.trim() || "#";
    history.replaceState(null, "", `#/topics?filter=${encodeURIComponent(topicFilter)}`);
    try {
      if (mode.value === "replay") await replay(topicFilter, mine);
      else tail(topicFilter, "latest");
    } catch (error) {
      status.textContent = `error: ${error.message}`;
      toast(error.message, "error");
    }
  }

  form.addEventListener("submit", start);
  stopButton.addEventListener("click", stop);
  if (params.get("filter")) start();
  return () => { stop(); stopTree(); };
}

registerSection({ id: "topics", title: "Topics", order: 20, render });
