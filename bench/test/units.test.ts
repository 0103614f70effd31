import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { MqttClient } from "mqtt";
import { parseMqttBenchmarkJson } from "../src/crosscheck/mqtt-benchmark.js";
import { expectedDeliveries } from "../src/generator/load-run.js";
import { PayloadWriter, readStamp } from "../src/generator/payload.js";
import { planClients, splitAcross } from "../src/generator/plan.js";
import { SequenceTracker } from "../src/generator/sequence-tracker.js";
import { SubscriberSet } from "../src/generator/subscriber-set.js";
import { ratio } from "../src/report/ratios.js";
import { median } from "../src/scenarios/measure-brokers.js";
import type { ResultRow } from "../src/scenarios/scenario.js";
import { longestStallMs } from "../src/system/loop-stalls.js";

describe("generator pieces", () => {
  test("payload - a stamp survives the round trip and each message has its own buffer", () => {
    const writer = new PayloadWriter(7, 64);
    const first = writer.stamp(1, 123_456_789n);
    const second = writer.stamp(2, 987_654_321n);
    assert.equal(first.length, 64);
    assert.deepEqual(readStamp(first), { publisherIndex: 7, sequence: 1, sentAtNs: 123_456_789n });
    assert.deepEqual(readStamp(second), { publisherIndex: 7, sequence: 2, sentAtNs: 987_654_321n });
  });

  test("sequence tracker - counts duplicates, losses and the highest seen", () => {
    const tracker = new SequenceTracker();
    for (const sequence of [0, 1, 1, 3, 20_000]) tracker.record(sequence);
    assert.equal(tracker.distinct, 4);
    assert.equal(tracker.duplicates, 1);
    assert.equal(tracker.highest, 20_000);
    assert.equal(tracker.lost(5), 2);
  });

  test("plan - pairwise, fan-in and fan-out topics and expectations", () => {
    const pairwise = planClients(
      { publishers: 2, subscribers: 3, pattern: "pairwise" },
      "r",
      ["a"],
      ["b", "c"],
    );
    assert.deepEqual(
      pairwise.subscribers.map((s) => s.expectsFrom),
      [[0], [1], [0]],
    );
    assert.deepEqual(
      pairwise.subscribers.map((s) => s.url),
      ["b", "c", "b"],
    );
    assert.equal(pairwise.subscribers[2]?.filter, pairwise.publishers[0]?.topic);
    const fanIn = planClients(
      { publishers: 3, subscribers: 1, pattern: "fan-in" },
      "r",
      ["a"],
      ["a"],
    );
    assert.equal(fanIn.subscribers[0]?.filter, "bench/r/in/+");
    assert.deepEqual(fanIn.subscribers[0]?.expectsFrom, [0, 1, 2]);
    const fanOut = planClients(
      { publishers: 1, subscribers: 2, pattern: "fan-out" },
      "r",
      ["a"],
      ["a"],
    );
    assert.ok(fanOut.subscribers.every((s) => s.filter === fanOut.publishers[0]?.topic));
    assert.deepEqual(splitAcross([1, 2, 3], 2), [[1, 3], [2]]);
  });
});

describe("shared groups in the generator", () => {
  test("plan - a shared group's members follow every publisher through one $share filter", () => {
    const plan = planClients(
      { publishers: 2, subscribers: 3, pattern: "shared" },
      "r",
      ["a"],
      ["b", "c"],
    );
    assert.deepEqual(
      plan.publishers.map((p) => p.topic),
      ["bench/r/sh/0", "bench/r/sh/1"],
    );
    for (const s of plan.subscribers) {
      assert.equal(s.filter, "$share/bench/bench/r/sh/+");
      assert.deepEqual(s.expectsFrom, [0, 1]);
      assert.equal(s.group, "$share/bench/");
    }
    assert.equal(expectedDeliveries(plan.subscribers, { 0: 10, 1: 5 }), 15, "once for the group");
  });

  test("subscriber set - a group's losses and duplicates are counted over its members", () => {
    const plan = planClients(
      { publishers: 1, subscribers: 2, pattern: "shared" },
      "r",
      ["a"],
      ["b"],
    );
    const set = new SubscriberSet();
    const clients = plan.subscribers.map(() => new EventEmitter());
    plan.subscribers.forEach((s, i) => {
      set.attach(clients[i] as unknown as MqttClient, s);
    });
    const writer = new PayloadWriter(0, 64);
    const send = (member: number, sequence: number) =>
      clients[member]?.emit("message", "t", writer.stamp(sequence, process.hrtime.bigint()));
    send(0, 0);
    send(1, 1);
    send(0, 2);
    send(1, 2);
    assert.equal(set.received, 3, "distinct messages");
    assert.deepEqual(set.deliveredThrough(1), [3]);
    const [first, second] = set.reports({ 0: 4 });
    assert.deepEqual(first, { index: 0, received: 2, lost: 1, duplicates: 1 });
    assert.deepEqual(second, { index: 1, received: 2, lost: 0, duplicates: 0 });
  });
});

describe("reporting", () => {
  const row = (broker: string, messagesPerSecond: number): ResultRow =>
    ({
      scenario: "throughput",
      broker,
      qos: 1,
      payloadBytes: 64,
      targetRate: null,
      messagesPerSecond,
      p99Ms: 1,
    }) as ResultRow;

  test("ratio - divides by the same case of the reference broker", () => {
    const rows = [row("mosquitto", 20_000), row("sluice", 15_000)];
    assert.equal(
      ratio(rows, rows[1] as ResultRow, "mosquitto", (r) => r.messagesPerSecond),
      0.75,
    );
    assert.equal(
      ratio(rows, rows[1] as ResultRow, "aedes", (r) => r.messagesPerSecond),
      undefined,
    );
  });

  test("median - the middle round, with every round kept", () => {
    const chosen = median([row("a", 3), row("a", 1), row("a", 2)], "messagesPerSecond");
    assert.equal(chosen.messagesPerSecond, 2);
    assert.equal(chosen.rounds?.length, 3);
  });

  test("mqtt-benchmark - its JSON totals are parsed", () => {
    const output = `{"runs":[{"id":0,"successes":100,"failures":0,"run_time":0.5,"msgs_per_sec":200}],
      "totals":{"ratio":1,"successes":100,"failures":0,"total_run_time":0.51,"avg_run_time":0.5,
      "msg_time_min":0.1,"msg_time_max":3,"msg_time_mean_avg":0.4,"msg_time_mean_std":0,
      "total_msgs_per_sec":200,"avg_msgs_per_sec":200}}`;
    assert.deepEqual(parseMqttBenchmarkJson(output), {
      totalMessagesPerSecond: 200,
      successes: 100,
      failures: 0,
      meanPublishMs: 0.4,
    });
  });
});

describe("system probes", () => {
  test("loop stalls - the longest stall that overlaps the window, 0 for none or no file", () => {
    const dir = mkdtempSync(join(tmpdir(), "stalls-"));
    const file = join(dir, "stalls.txt");
    assert.equal(longestStallMs(file, 0, 10_000), 0);
    // Stalls as the probe writes them: the epoch ms each ended at, and how long it was.
    writeFileSync(file, "1000 50.0\n2000 300.5\n2500 120.0\n9000 700.0\n");
    assert.equal(longestStallMs(file, 1_800, 2_600), 300.5);
    assert.equal(longestStallMs(file, 2_100, 2_600), 120, "ended inside, began before: counted");
    assert.equal(longestStallMs(file, 2_600, 8_500), 700, "began inside, ended after: counted");
    assert.equal(longestStallMs(file, 2_600, 8_200), 0);
    rmSync(dir, { recursive: true });
  });
});
