// Publish: one event through POST /v1/events (topic, payload, QoS, retain, properties).
"use strict";

import { api, el, registerSection, toast } from "../lib.js";

function render(main, params) {
  const topic = el("input", { id: "pub-topic", required: true, value: params.get("topic") || "", size: 50 });
  const payload = el("textarea", { id: "pub-payload", rows: 6, cols: 60 });
  const encoding = el("select", { id: "pub-encoding" },
    el("option", { value: "text" }, "text"), el("option", { value: "base64" }, "base64"));
  const qos = el("select", { id: "pub-qos" }, [0, 1, 2].map((q) => el("option", { value: q }, q)));
  const retain = el("input", { type: "checkbox", id: "pub-retain" });
  const contentType = el("input", { id: "pub-content-type", placeholder: "e.g. application/json" });
  const responseTopic = el("input", { id: "pub-response-topic" });
  const expiry = el("input", { type: "number", min: 0, id: "pub-expiry", placeholder: "seconds" });
  const userProps = el("textarea", { id: "pub-user-properties", rows: 3, cols: 40,
    placeholder: "key=value, one a line" });
  const result = el("p.status", { id: "pub-result" });
  const form = el("form.publish", { id: "publish-form" },
    el("label", {}, "topic ", topic),
    el("label", {}, "payload ", payload),
    el("div", {}, el("label", {}, "encoding ", encoding), " ", el("label", {}, "QoS ", qos), " ",
      el("label", {}, retain, " retain")),
    el("fieldset", {}, el("legend", {}, "properties"),
      el("label", {}, "content type ", contentType),
      el("label", {}, "response topic ", responseTopic),
      el("label", {}, "message expiry ", expiry),
      el("label", {}, "user properties ", userProps)),
    el("button", { type: "submit", id: "pub-submit" }, "publish"), result);
  main.append(el("h2", {}, "Publish"), el("section.card.wide", {}, form));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const properties = {};
    if (contentType.value) properties.content_type = contentType.value;
    if (responseTopic.value) properties.response_topic = responseTopic.value;
    if (expiry.value !== "") properties.message_expiry = Number(expiry.value);
    const pairs = userProps.value.split("\n").map((l) => l.trim()).filter(Boolean).map((line) => {
      const at = line.indexOf("=");
      return at < 0 ? [line, ""] : [line.slice(0, at), line.slice(at + 1)];
    });
    if (pairs.length) properties.user_properties = pairs;
    const body = { events: [{ topic: topic.value, payload: payload.value, encoding: encoding.value,
      qos: Number(qos.value), retain: retain.checked, properties }] };
    try {
      const stored = (await api("/v1/events", { method: "POST", body })).events[0];
      result.textContent = `stored at offset ${stored.offset}`;
      result.dataset.offset = stored.offset;
    } catch (error) {
      result.textContent = `refused: ${error.message}`;
      toast(error.message, "error");
    }
  });
}

registerSection({ id: "publish", title: "Publish", order: 50, render });
