import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { parse } from "yaml";
import { countersSince, parseSluiceCounters } from "../src/brokers/sluice-metrics.js";
import { connackCode, connectPacket } from "../src/generator/connect-packets.js";
import { splitGroups } from "../src/generator/connection-pool.js";
import { planClients } from "../src/generator/plan.js";
import { PacketReader, publishTemplate } from "../src/generator/raw-packets.js";
import { subscribePacket } from "../src/generator/subscribe-packets.js";
import { parseCli } from "../src/options.js";
import { renderScenarioTable } from "../src/report/scenario-table.js";
import { RECOMMENDED_PLC_LIMITS } from "../src/scenarios/flood.js";
import { aclText } from "../src/scenarios/security-fixtures.js";

test("connectPacket is an MQTT 3.1.1 CONNECT with a clean session and keep-alive 0", () => {
  const packet = connectPacket("c1");
  assert.deepEqual(
    [...packet],
    [0x10, 14, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x02, 0, 0, 0, 2, 0x63, 0x31],
  );
});

test("connackCode reads the return code once the 4 bytes are in", () => {
  assert.equal(connackCode(Buffer.from([0x20, 0x02])), undefined);
  assert.equal(connackCode(Buffer.from([0x20, 0x02, 0x00, 0x00])), 0);
  assert.equal(connackCode(Buffer.from([0x20, 0x02, 0x00, 0x03])), 3);
  assert.equal(connackCode(Buffer.from([0x30, 0x02, 0x00, 0x00])), "not-connack");
});

test("splitGroups deals every connection once, with distinct client-id prefixes", () => {
  const groups = splitGroups("mqtt://127.0.0.1:1", 10_001, 3, "x-");
  assert.deepEqual(
    groups.map((g) => g.count),
    [3_334, 3_334, 3_333],
  );
  assert.equal(new Set(groups.map((g) => g.clientIdPrefix)).size, 3);
  assert.equal(splitGroups("mqtt://127.0.0.1:1", 1, 4, "x-").length, 1);
});

test("aclText has the asked number of rules, the allowing one last", () => {
  const lines = aclText(1_000).trim().split("\n");
  assert.equal(lines[0], "user bench");
  assert.equal(lines.length, 1_001);
  assert.equal(lines[lines.length - 1], "topic readwrite bench/#");
});

test("renderScenarioTable right-aligns figures and leaves unmeasured cells empty", () => {
  const markdown = renderScenarioTable({
    title: "t",
    columns: ["broker", "connects/s", "note"],
    rows: [
      { broker: "a|b", "connects/s": 1234, note: null },
      { broker: "c", "connects/s": 1.5, note: true },
    ],
    notes: ["n"],
  });
  assert.equal(
    markdown,
    [
      "### t",
      "",
      "| broker | connects/s | note |",
      "| --- | ---: | --- |",
      "| a\\|b | 1,234 |  |",
      "| c | 1.50 | yes |",
      "",
      "- n",
    ].join("\n"),
  );
});

test("--clients sets N for the connection scenarios", () => {
  assert.equal(parseCli(["storm", "--clients", "2000"], {}).run.clients, 2_000);
  assert.equal(parseCli(["storm"], {}).run.clients, undefined);
});

test("--filters sets M for subscribe-storm", () => {
  assert.equal(parseCli(["subscribe-storm", "--filters", "250"], {}).run.filters, 250);
  assert.equal(parseCli(["subscribe-storm"], {}).run.filters, undefined);
});

test("subscribePacket encodes one filter with its packet id and QoS", () => {
  const bytes = subscribePacket(258, "storm/c/cmd/0", 1);
  const expected = Buffer.from("storm/c/cmd/0");
  assert.deepEqual(
    [...bytes],
    [0x82, 2 + 2 + expected.length + 1, 1, 2, 0, expected.length, ...expected, 1],
  );
});

test("parseSluiceCounters reads refusals and drops by reason, throttles, connections, resets, backpressure", () => {
  const text = [
    "# HELP sluice_connections_rejected_total Connections refused, by reason",
    "# TYPE sluice_connections_rejected_total counter",
    'sluice_connections_rejected_total{reason="rate",node="n1"} 12',
    'sluice_connections_rejected_total{node="n1",reason="per_ip"} 3',
    'sluice_protocol_errors_total{reason="packet_too_large",node="n1"} 1',
    'sluice_publish_throttled_total{node="n1"} 2',
    'sluice_messages_received_total{node="n1"} 700',
    'sluice_connections{listener="tcp",node="n1"} 4',
    'sluice_connections{listener="ws",node="n1"} 1',
    'nodejs_eventloop_lag_max_seconds{node="n1"} 0.25',
    'sluice_redis_subscription_resets_total{node="n1"} 1',
    'sluice_dropped_messages_total{reason="slow_consumer",node="n1"} 40',
    'sluice_cluster_backpressure_seconds_total{node="n1"} 1.5',
    'sluice_cluster_subscription_paused_seconds_total{node="n1"} 0.25',
  ].join("\n");
  const counters = parseSluiceCounters(text);
  assert.deepEqual(counters, {
    rejected: { rate: 12, per_ip: 3 },
    protocolErrors: { packet_too_large: 1 },
    dropped: { slow_consumer: 40 },
    throttled: 2,
    messagesReceived: 700,
    openConnections: 5,
    eventLoopDelayMaxMs: 250,
    redisSubscriptionResets: 1,
    backpressureSeconds: 1.5,
    subscriptionPausedSeconds: 0.25,
  });
  const later = parseSluiceCounters(text.replace("} 12", "} 20").replace("} 2\n", "} 5\n"));
  const since = countersSince(counters, later);
  assert.deepEqual(since.rejected, { rate: 8, per_ip: 0 });
  assert.equal(since.throttled, 3);
  assert.equal(since.redisSubscriptionResets, 0);
  assert.equal(since.backpressureSeconds, 0);
  assert.equal(parseSluiceCounters("sluice_connections 1").redisSubscriptionResets, null);
});

test("PacketReader splits packets across reads; a QoS 1 template's packet id is where it says", () => {
  const { bytes, packetIdOffset } = publishTemplate("a/b", 1, 300);
  const copy = Buffer.from(bytes);
  copy.writeUInt16BE(0xbeef, packetIdOffset);
  const puback = Buffer.from([0x40, 2, 0xbe, 0xef]);
  const seen: Array<{ type: number; length: number }> = [];
  const reader = new PacketReader((first, body) =>
    seen.push({ type: first >> 4, length: body.length }),
  );
  const stream = Buffer.concat([copy, puback]);
  for (let at = 0; at < stream.length; at += 7) reader.push(stream.subarray(at, at + 7));
  assert.deepEqual(seen, [
    { type: 3, length: 2 + 3 + 2 + 300 },
    { type: 4, length: 2 },
  ]);
  // The body: topic "a/b", then the packet id.
  assert.equal(copy.readUInt16BE(packetIdOffset), 0xbeef);
  assert.equal(copy.subarray(packetIdOffset - 3, packetIdOffset).toString(), "a/b");
});

test("planClients binds each side's clients to its addresses, round robin", () => {
  const plan = planClients(
    { publishers: 3, subscribers: 1, pattern: "fan-in" },
    "r",
    ["u"],
    ["u"],
    {
      publishers: ["127.0.1.1", "127.0.1.2"],
    },
  );
  assert.deepEqual(
    plan.publishers.map((p) => p.fromAddress),
    ["127.0.1.1", "127.0.1.2", "127.0.1.1"],
  );
  assert.equal(plan.subscribers[0]?.fromAddress, undefined);
});

test("the flood scenario runs the recommended PLC limits, as docs/flood-protection.md has them", async () => {
  const docs = await readFile(
    new URL("../../../docs/flood-protection.md", import.meta.url),
    "utf8",
  );
  const section = docs.slice(docs.indexOf("## Recommended limits for a PLC fleet"));
  const block = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(block, "docs/flood-protection.md has the recommended limits block");
  assert.deepEqual(parse(block), { limits: RECOMMENDED_PLC_LIMITS });
});
