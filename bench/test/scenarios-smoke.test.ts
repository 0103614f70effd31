/**
 * The --quick variant of the scenarios that start clusters and faults, end to end (the
 * measuring ones are in measurement-smoke.test.ts: one file each keeps under the runner's
 * per-file timeout).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { onlyTableRows, runQuick } from "../../harness/bench-quick-run.js";

test("smoke - connections --quick connects its clients to Mosquitto and Sluice", async () => {
  const rows = onlyTableRows(await runQuick("connections", ["mosquitto", "sluice"]));
  for (const row of rows) {
    assert.equal(row.connections, 500);
    assert.ok(Number(row["connects/s"]) > 0);
    assert.equal(row["CONNACK 3"], 0);
  }
});

test("smoke - storm --quick brings the killed node's clients back on the survivor", async () => {
  const [row] = onlyTableRows(await runQuick("storm"));
  assert.equal(row?.dropped, 150);
  assert.equal(row?.["survivor crashed"], false);
  assert.ok(Number(row?.["all back (s)"]) >= 0);
});

test("smoke - subscribe-storm --quick: every filter SUBACKed, the departure measured, Sluice's gauge back at its baseline", async () => {
  const rows = onlyTableRows(
    await runQuick("subscribe-storm", ["mosquitto", "aedes", "sluice", "sluice-redis"]),
  );
  assert.equal(rows.length, 4);
  for (const row of rows) {
    assert.equal(row.SUBACKed, 100 * 20);
    assert.ok(Number(row["subscriptions/s"]) > 0);
    assert.ok(Number(row["bystander p99 ms"]) >= 0);
    assert.ok(Number(row["departure bystander p99 ms"]) >= 0);
    if (String(row.broker).startsWith("sluice")) {
      assert.notEqual(row["gauge back (s)"], null);
      assert.ok(Number(row["departure loop stall max ms"]) >= 0);
    }
  }
});

test("smoke - failover --quick loses no acknowledged message when a node behind HAProxy dies", async () => {
  const [row] = onlyTableRows(await runQuick("failover"));
  assert.equal(row?.["lost (acknowledged)"], 0);
  assert.ok(Number(row?.acknowledged) > 0);
  assert.equal(row?.["survivor crashed"], false);
});

test("smoke - chaos --quick runs three faults under load and loses no acknowledged message, shared ones included", async () => {
  const rows = onlyTableRows(await runQuick("chaos"));
  assert.deepEqual(
    rows.map((r) => r.scenario),
    ["node-redis-cut-200ms", "redis-latency-50ms", "node-lb-cut-2s"],
  );
  for (const row of rows) {
    assert.equal(row["lost (acknowledged)"], 0, String(row.scenario));
    assert.ok(Number(row.acknowledged) > 0);
    assert.notEqual(row["recovered after heal s"], null, "everything acknowledged delivered");
    assert.ok(Number(row["shared deliveries"]) > 0, "the shared group's members got messages");
    assert.equal(row["shared stranded"], 0, String(row.scenario));
  }
});

test("smoke - security-overhead --quick measures the open and the secured node", async () => {
  const rows = onlyTableRows(await runQuick("security-overhead"));
  assert.equal(rows.length, 2);
  for (const row of rows) {
    assert.ok(Number(row["msg/s"]) > 0);
    assert.equal(row.lost, 0);
  }
});
