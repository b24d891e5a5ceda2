// The console's shared parts: credentials, the REST client, the SSE reader, charts,
// dialogs, and the registry of sections (each page registers itself; docs/console.md).
"use strict";

// -- credentials: kept in this tab only (sessionStorage), sent as a header ------------

const AUTH_KEY = "tidelog.auth";

export const auth = {
  get() {
    try { return JSON.parse(sessionStorage.getItem(AUTH_KEY)) || null; } catch { return null; }
  },
  set(value) {
    if (value) sessionStorage.setItem(AUTH_KEY, JSON.stringify(value));
    else sessionStorage.removeItem(AUTH_KEY);
  },
  header() {
    const value = this.get();
    if (!value) return null;
    if (value.token) return `Bearer ${value.token}`;
    const bytes = new TextEncoder().encode(`${value.user}:${value.password}`);
    return `Basic ${btoa(String.fromCharCode(...bytes))}`;
  },
  label() {
    const value = this.get();
    if (!value) return "anonymous";
    return value.user || "token";
  },
};

// -- REST ------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(handler) { onUnauthorized = handler; }

function headers(extra) {
  // X-Requested-With: a refused request is challenged with Bearer only, so the browser
  // does not open its own Basic login prompt over the console's login form
  const out = { "x-requested-with": "tidelog-console", ...extra };
  const value = auth.header();
  if (value) out.authorization = value;
  return out;
}

/** A request to the API; the parsed JSON answer (null for 204). 401 asks for a login. */
export async function api(path, { method = "GET", body, query, raw } = {}) {
  const url = new URL(path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const init = { method, headers: headers({ accept: "application/json" }), cache: "no-store" };
  if (raw !== undefined) {
    init.body = raw.body;
    init.headers["content-type"] = raw.type;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["content-type"] = "application/json";
  }
  const response = await fetch(url, init);
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (!response.ok) {
    const error = new ApiError(response.status, data || {});
    if (response.status === 401) onUnauthorized(error);
    throw error;
  }
  return data;
}

// -- Server-Sent Events over fetch (so the Authorization header goes along) ----------

/**
 * Read an SSE endpoint: onMessage(name, data, id) for each message. Reconnects after
 * an error, asking resume(lastId) for the query to resume with (the live tail resumes
 * at the offset after the last one seen: no gap, no duplicate). close() stops it.
 */
export function stream(path, query, onMessage, { onState = () => {}, resume } = {}) {
  let controller = null;
  let closed = false;
  let lastId = null;
  let params = { ...query };

  async function run() {
    while (!closed) {
      controller = new AbortController();
      const url = new URL(path, location.origin);
      for (const [key, value] of Object.entries(params)) {
        if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
      }
      try {
        const response = await fetch(url, {
          headers: headers({ accept: "text/event-stream" }),
          signal: controller.signal,
          cache: "no-store",
        });
        if (!response.ok) {
          const problem = await response.json().catch(() => ({}));
          const error = new ApiError(response.status, problem);
          if (response.status === 401) onUnauthorized(error);
          onState("error", error);
          if (response.status < 500) return;  // a refusal: retrying will not help
        } else {
          onState("open");
          await readEvents(response.body, (name, data, id) => {
            if (id !== null) lastId = id;
            onMessage(name, data, id);
          });
        }
      } catch (error) {
        if (closed) return;
        onState("error", error);
      }
      if (closed) return;
      if (resume && lastId !== null) params = { ...query, ...resume(lastId) };
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  run();
  return {
    close() {
      closed = true;
      if (controller) controller.abort();
    },
  };
}

async function readEvents(body, deliver) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let name = "message", data = [], id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        if (data.length) deliver(name, JSON.parse(data.join("\n")), id);
        name = "message"; data = []; id = null;
      } else if (line.startsWith("data:")) {
        data.push(line.slice(5).trimStart());
      } else if (line.startsWith("event:")) {
        name = line.slice(6).trim();
      } else if (line.startsWith("id:")) {
        id = line.slice(3).trim();
      }  // ":" comments (keepalive) are skipped
    }
  }
}

// -- DOM helpers ------------------------------------------------------------------------

/** el("div.card", {title: "x"}, child, "text") */
export function el(spec, attributes = {}, ...children) {
  const [tag, ...classes] = spec.split(".");
  const node = document.createElement(tag || "div");
  if (classes.length) node.className = classes.join(" ");
  for (const [key, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (value === true) node.setAttribute(key, "");
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function table(columns, rows, rowClass = "") {
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.map((cells) => el(`tr${rowClass ? "." + rowClass : ""}`, {},
      cells.map((c) => el("td", {}, c))))));
}

export function toast(text, kind = "info") {
  const node = document.getElementById("toast");
  node.textContent = text;
  node.className = kind;
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, 4000);
}

/** A confirmation dialog; resolves true when confirmed. */
export function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// -- formatting -----------------------------------------------------------------------

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 0.001) return `${(s * 1e6).toFixed(0)} µs`;
  if (s < 1) return `${(s * 1000).toFixed(2)} ms`;
  return `${s.toFixed(2)} s`;
}

export function fmtDuration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24;
  const m = Math.floor(seconds / 60) % 60, s = Math.floor(seconds % 60);
  return d ? `${d}d ${h}h ${m}m` : h ? `${h}h ${m}m ${s}s` : m ? `${m}m ${s}s` : `${s}s`;
}

export function fmtTime(ms) {
  if (ms === null || ms === undefined) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace("Z", "");
}

export function fmtRate(n) {
  if (n === null || n === undefined) return "–";
  return n >= 100 ? n.toFixed(0) : n.toFixed(1);
}

// -- payloads -------------------------------------------------------------------------

export function payloadBytes(event) {
  if (event.encoding === "text") return new TextEncoder().encode(event.payload);
  const binary = atob(event.payload);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export function renderPayload(bytes, mode) {
  if (mode === "hex") {
    const lines = [];
    for (let i = 0; i < bytes.length; i += 16) {
      const chunk = Array.from(bytes.slice(i, i + 16));
      const hex = chunk.map((b) => b.toString(16).padStart(2, "0")).join(" ");
      const ascii = chunk.map((b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : ".")).join("");
      lines.push(`${i.toString(16).padStart(6, "0")}  ${hex.padEnd(47)}  ${ascii}`);
    }
    return lines.join("\n");
  }
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  if (mode === "json") {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
  }
  return text;
}

// -- charts (uPlot) -------------------------------------------------------------------

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04",
  "#db2777"];

/** A time-series chart in ``container``: series labels; push(time_s, values) appends. */
export class LiveChart {
  constructor(container, labels, { keep = 300, height = 180, unit = "" } = {}) {
    this.keep = keep;
    this.data = [[], ...labels.map(() => [])];
    const width = Math.max(300, container.clientWidth - 8);
    this.plot = new uPlot({
      width,
      height,
      series: [{}, ...labels.map((label, i) => ({
        label, stroke: COLORS[i % COLORS.length], width: 2,
        value: (u, v) => (v === null || v === undefined ? "–" : `${fmtRate(v)}${unit}`),
      }))],
      axes: [{}, { size: 60 }],
      // at least the last minute on the time axis (a lone first point would otherwise
      // stretch it over years)
      scales: { x: { time: true, range: (u, min, max) => {
        const end = max ?? Date.now() / 1000;
        return [Math.min(min ?? end, end - 60), end];
      } } },
      legend: { live: false },
    }, this.data, container);
    this.container = container;
    this.resize = () => this.plot.setSize({ width: Math.max(300, container.clientWidth - 8), height });
    window.addEventListener("resize", this.resize);
  }

  push(time, values) {
    this.data[0].push(time);
    values.forEach((v, i) => this.data[i + 1].push(v));
    if (this.data[0].length > this.keep) this.data.forEach((column) => column.shift());
    this.plot.setData(this.data);
  }

  destroy() {
    window.removeEventListener("resize", this.resize);
    this.plot.destroy();
  }
}

// -- sections -------------------------------------------------------------------------

export const sections = [];

/**
 * Add a page: {id, title, order, render(main, params) -> optional cleanup function}.
 * The render function builds the page inside ``main``; the cleanup (closing streams,
 * stopping timers) runs when the user leaves.
 */
export function registerSection(section) {
  sections.push(section);
  sections.sort((a, b) => a.order - b.order);
}

/** Run ``task`` now and every ``ms`` until the returned function is called. */
export function every(ms, task) {
  let stopped = false;
  let timer = null;
  async function tick() {
    try { await task(); } catch (error) { if (!stopped) console.warn(error.message); }
    if (!stopped) timer = setTimeout(tick, ms);
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}
