// The console's shell: navigation between sections, login and logout.
// Each page is a module that registers a section (lib.js, registerSection).
"use strict";

import { api, auth, el, sections, setUnauthorizedHandler, toast } from "./lib.js";
import "./pages/overview.js";
import "./pages/topics.js";
import "./pages/consumers.js";
import "./pages/clients.js";
import "./pages/publish.js";

const main = document.getElementById("main");
let leave = null;
let settings = { anonymous: true };

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [id, query = ""] = hash.split("?");
  return { id: id || sections[0].id, params: new URLSearchParams(query) };
}

function show() {
  if (leave) { leave(); leave = null; }
  const { id, params } = route();
  const section = sections.find((s) => s.id === id) || sections[0];
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.section === section.id);
  }
  main.replaceChildren();
  main.dataset.section = section.id;
  document.title = `${section.title} · tidelog console`;
  if (!auth.get() && !settings.anonymous) {
    main.append(el("p.muted", {}, "Log in to see this server."));
    askLogin();
    return;
  }
  leave = section.render(main, params) || null;
}

function renderNav() {
  const nav = document.getElementById("nav");
  nav.replaceChildren(...sections.map((s) =>
    el("a", { href: `#/${s.id}`, dataset: { section: s.id } }, s.title)));
  document.getElementById("who").textContent = auth.label();
  document.getElementById("account").textContent = auth.get() ? "log out" : "log in";
}

function askLogin(message = "") {
  const dialog = document.getElementById("login");
  document.getElementById("login-error").textContent = message;
  if (!dialog.open) dialog.showModal();
}

async function login(event) {
  event.preventDefault();
  const form = new FormData(event.target);
  const token = form.get("token").trim();
  const value = token ? { token } : { user: form.get("user").trim(), password: form.get("password") };
  const previous = auth.get();
  auth.set(value);
  try {
    await api("/v1/overview");
  } catch (error) {
    auth.set(previous);
    document.getElementById("login-error").textContent =
      error.status === 401 ? "Wrong user name, password or token." : error.message;
    return;
  }
  event.target.reset();
  document.getElementById("login").close();
  renderNav();
  show();
}

async function start() {
  try {
    settings = await api("/console/config.json");
  } catch (error) {
    toast(`cannot read the console's settings: ${error.message}`, "error");
  }
  setUnauthorizedHandler(() => askLogin(auth.get() ? "Your credentials were refused." : ""));
  document.getElementById("login-form").addEventListener("submit", login);
  document.getElementById("account").addEventListener("click", () => {
    if (!auth.get()) { askLogin(); return; }
    auth.set(null);
    renderNav();
    show();
  });
  renderNav();
  window.addEventListener("hashchange", show);
  show();
}

start();
