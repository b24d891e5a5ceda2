// One MQTT.js (npm `mqtt`) session against a running tidelog, for
// tests/protocols/mqtt/test_interop_mqttjs.py. Prints what it saw as one JSON line.
//
//   node mqttjs_scenario.cjs <url> <protocol version: 4 or 5> <topic prefix>
//
// <url> is mqtt://127.0.0.1:<port> (TCP) or ws://127.0.0.1:<port>/mqtt (WebSocket).
// A subscriber takes `<prefix>/+/plus` at QoS 1, `<prefix>/deep/#` at QoS 2 and
// `<prefix>/will` at QoS 1; a publisher sends QoS 0, 1 and 2 to deep/..., QoS 2 to
// a/plus (delivered at the granted QoS 1), QoS 1 to a/b/plus (matches no filter:
// `+` is one level) and a retained message; a client with a will is cut off
// without DISCONNECT; a late subscriber gets the retained message. With protocol
// 5 the publishes carry user properties and a content type.
"use strict";
const mqtt = require("mqtt");

const [url, versionText, prefix] = process.argv.slice(2);
const version = Number(versionText);
const TIMEOUT_MS = 60000;

function options(clientId, extra = {}) {
  return { clientId, protocolVersion: version, reconnectPeriod: 0, connectTimeout: TIMEOUT_MS, clean: true, ...extra };
}

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function message(topic, payload, packet) {
  const out = { topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain };
  if (packet.properties) {
    out.userProperties = packet.properties.userProperties || null;
    out.contentType = packet.properties.contentType || null;
  }
  return out;
}

async function main() {
  const result = { version };
  const received = [];
  let arrived = () => {};
  const sub = await within(mqtt.connectAsync(url, options(`${prefix}-sub`)), "subscriber CONNACK");
  sub.on("message", (topic, payload, packet) => {
    received.push(message(topic, payload, packet));
    arrived();
  });
  const granted = await within(sub.subscribeAsync({
    [`${prefix}/+/plus`]: { qos: 1 },
    [`${prefix}/deep/#`]: { qos: 2 },
    [`${prefix}/will`]: { qos: 1 },
  }), "SUBACK");
  result.granted = granted.map((g) => g.qos);

  const pub = await within(mqtt.connectAsync(url, options(`${prefix}-pub`)), "publisher CONNACK");
  for (const qos of [0, 1, 2]) {
    const properties = version === 5
      ? { userProperties: { k: `v${qos}` }, contentType: "text/plain" }
      : undefined;
    await within(pub.publishAsync(`${prefix}/deep/q${qos}`, `deep ${qos}`, { qos, properties }), `publish QoS ${qos}`);
  }
  await within(pub.publishAsync(`${prefix}/a/plus`, "plus", { qos: 2 }), "publish a/plus");
  await within(pub.publishAsync(`${prefix}/a/b/plus`, "not matched", { qos: 1 }), "publish a/b/plus");
  await within(pub.publishAsync(`${prefix}/retained`, "kept", { qos: 1, retain: true }), "publish retained");

  const will = { topic: `${prefix}/will`, payload: Buffer.from("gone"), qos: 1, retain: false };
  const victim = await within(mqtt.connectAsync(url, options(`${prefix}-victim`, { will })), "victim CONNACK");
  victim.stream.destroy(); // the connection breaks without DISCONNECT: the will is due
  await within(new Promise((resolve) => {
    arrived = () => { if (received.some((m) => m.topic === will.topic)) resolve(); };
    arrived();
  }), "the will");

  const late = await within(mqtt.connectAsync(url, options(`${prefix}-late`)), "late CONNACK");
  const retained = new Promise((resolve) => late.on("message", (t, p, packet) => resolve(message(t, p, packet))));
  await within(late.subscribeAsync(`${prefix}/retained`, { qos: 1 }), "late SUBACK");
  result.retained = await within(retained, "the retained message");
  result.received = received;
  await Promise.all([sub.endAsync(), pub.endAsync(), late.endAsync()]);
  victim.end(true);
  process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((error) => {
  process.stdout.write(JSON.stringify({ error: String(error && error.stack || error) }) + "\n");
  process.exit(1);
});
