import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { type RunningNode, startNode } from "../../harness/in-process-node.js";
import { connect, end, Inbox, subscribe } from "../../harness/mqtt-client.js";

let running: RunningNode;
before(async () => {
  running = await startNode({ nodeId: "metrics-node" });
});
after(async () => {
  await running.stop();
});

/** Parses the Prometheus text format into `name{labels}` -> value. */
async function scrape(): Promise<Map<string, number>> {
  const response = await fetch(`${running.httpUrl}/metrics`);
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain/);
  const series = new Map<string, number>();
  for (const line of (await response.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    series.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return series;
}

const value = (series: Map<string, number>, key: string): number => {
  const found = series.get(key);
  assert.notEqual(found, undefined, `series ${key} is exposed`);
  return found as number;
};

describe("HTTP probes and metrics", () => {
  it("/healthz and /readyz answer 200 on a serving node", async () => {
    assert.equal((await fetch(`${running.httpUrl}/healthz`)).status, 200);
    assert.equal((await fetch(`${running.httpUrl}/readyz`)).status, 200);
  });

  it("unknown paths get 404 and other methods 405", async () => {
    assert.equal((await fetch(`${running.httpUrl}/nope`)).status, 404);
    assert.equal((await fetch(`${running.httpUrl}/metrics`, { method: "POST" })).status, 405);
  });

  it("exposes the contract's metric names and Node's process metrics, labelled with the node id", async () => {
    const series = await scrape();
    for (const key of [
      'sluice_connections{listener="tcp",protocol="pending",node="metrics-node"}',
      'sluice_messages_received_total{node="metrics-node"}',
      'sluice_messages_sent_total{node="metrics-node"}',
      'sluice_bytes_received_total{node="metrics-node"}',
      'sluice_bytes_sent_total{node="metrics-node"}',
      'sluice_subscriptions{node="metrics-node"}',
      'sluice_retained_messages{node="metrics-node"}',
      'process_resident_memory_bytes{node="metrics-node"}',
      'nodejs_eventloop_lag_seconds{node="metrics-node"}',
    ]) {
      value(series, key);
    }
  });

  it("counts connections, messages, bytes, subscriptions and retained messages", async () => {
    const before = await scrape();
    const subscriber = await connect(running.urls.tcp as string);
    const publisher = await connect(running.urls.tcp as string);
    try {
      const inbox = new Inbox(subscriber);
      await subscribe(subscriber, "m/#", 1);
      await publisher.publishAsync("m/1", "a", { qos: 1 });
      await publisher.publishAsync("m/2", "b", { qos: 1 });
      await publisher.publishAsync("m/kept", "c", { qos: 1, retain: true });
      await inbox.waitFor(3);

      const during = await scrape();
      const delta = (key: string) => value(during, key) - (before.get(key) ?? 0);
      assert.equal(
        value(during, 'sluice_connections{listener="tcp",protocol="3.1.1",node="metrics-node"}'),
        2,
      );
      assert.equal(
        value(during, 'sluice_connections{listener="tcp",protocol="pending",node="metrics-node"}'),
        0,
        "accepted connections leave `pending`",
      );
      assert.equal(delta('sluice_connections_total{listener="tcp",node="metrics-node"}'), 2);
      assert.equal(delta('sluice_connects_total{protocol="3.1.1",node="metrics-node"}'), 2);
      assert.equal(delta('sluice_messages_received_total{node="metrics-node"}'), 3);
      assert.equal(delta('sluice_messages_sent_total{node="metrics-node"}'), 3);
      assert.ok(delta('sluice_bytes_received_total{node="metrics-node"}') > 0);
      assert.ok(delta('sluice_bytes_sent_total{node="metrics-node"}') > 0);
      assert.equal(value(during, 'sluice_subscriptions{node="metrics-node"}'), 1);
      assert.equal(value(during, 'sluice_retained_messages{node="metrics-node"}'), 1);
    } finally {
      await end(subscriber, publisher);
    }
  });
});
