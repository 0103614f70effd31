/**
 * The --quick variant of the measuring scenarios (flood, cluster-cost, mqtt5, shared), end to
 * end: brokers and generators start, figures come back without errors, everything is stopped.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { onlyTableRows, runQuick } from "../../harness/bench-quick-run.js";

/**
 * flood --quick: the fleet is served under attack, and every attacker was held to its limits.
 * The p99 ratio is a figure to read, not to assert: on a shared CI machine it is noise.
 */
async function floodQuick(broker: string): Promise<void> {
  const output = await runQuick("flood", [broker]);
  const [latency, publishFloods, connectionAttacks] = output.tables ?? [];
  const [row] = onlyTableRows({ rows: [], tables: latency ? [latency] : [], config: {} });
  assert.equal(row?.broker, broker);
  for (const column of ["p99 ms", "p99 ms attacked", "p99 ratio"])
    assert.ok(Number(row?.[column]) > 0, `${column}: ${row?.[column]}`);
  assert.equal(row?.lost, 0, "the fleet lost nothing");
  for (const column of ["delivered msg/s", "delivered msg/s attacked"])
    assert.ok(
      Number(row?.[column]) >= 360,
      `the fleet's 400 msg/s arrived: ${column} ${row?.[column]}`,
    );

  const floods = publishFloods?.rows ?? [];
  assert.deepEqual(
    floods.map((f) => f.qos),
    [0, 1],
  );
  for (const flood of floods) {
    const allowed = Number(flood["allowed (burst + limit x window)"]);
    assert.ok(Number(flood.written) >= 2 * allowed, `QoS ${flood.qos} flooded: ${flood.written}`);
    assert.ok(Number(flood.delivered) > 0, `QoS ${flood.qos}: some got through`);
    assert.ok(
      Number(flood.delivered) <= allowed,
      `QoS ${flood.qos} held to its limit: ${flood.delivered} delivered, ${allowed} allowed`,
    );
    assert.ok(Number(flood["throttle episodes (node)"]) >= 2, "both flooders were throttled");
  }

  const [attacks] = connectionAttacks?.rows ?? [];
  assert.ok(attacks, "connection attacks reported");
  assert.ok(Number(attacks["node: rejected rate"]) > 0, "the connection flood hit the rate quota");
  assert.ok(Number(attacks.accepted) <= 20, `at most perIp accepted: ${attacks.accepted}`);
  // Refused at the socket: closed at once, or answered with CONNACK 3 within the answers' bounds.
  assert.equal(
    Number(attacks["closed before CONNACK"]) + Number(attacks["CONNACK refused"]),
    Number(attacks["node: rejected (all reasons)"]),
    "every refused attempt is one the node counted",
  );
  assert.ok(Number(attacks["slowloris sockets"]) > 0);
  assert.equal(attacks["slowloris closed by node"], attacks["slowloris sockets"]);
  assert.equal(attacks["oversize closed by node"], true);
  assert.match(String(attacks["node: protocol errors"]), /packet_too_large 1/);
}

test("smoke - flood --quick throttles and refuses the attackers of an in-memory node", async () => {
  await floodQuick("sluice");
});

test("smoke - flood --quick throttles and refuses the attackers of a node over Redis", async () => {
  await floodQuick("sluice-redis");
});

test("smoke - cluster-cost --quick prices a message on each process, in memory and over Redis", async () => {
  const output = await runQuick("cluster-cost", ["sluice", "sluice-redis"]);
  const [goals, rate, fullSpeed, connects] = output.tables ?? [];
  const rows = onlyTableRows({
    rows: [],
    tables: [rate, fullSpeed, connects].flatMap((t) => (t ? [t] : [])),
    config: {},
  });
  assert.equal(rows.length, 2 + 2 + 2);
  for (const row of [...(rate?.rows ?? []), ...(fullSpeed?.rows ?? [])]) {
    const overRedis = row.broker === "sluice-redis";
    assert.ok(Number(row["delivered msg/s"]) > 0, `${row.broker} delivered`);
    assert.ok(Number(row["nodes µs/msg"]) > 0, `${row.broker}: node CPU per message`);
    assert.notEqual(row["ready throughout"], null, "the node's /readyz was polled");
    assert.notEqual(row["node drops"], null, "the node's /metrics was read");
    if (overRedis) {
      assert.ok(Number(row["Redis µs/msg"]) > 0, "Redis CPU per message");
      assert.ok(Number(row["Redis cmds/msg"]) > 0, "Redis commands per message");
      assert.ok(Number(row["Redis B in/msg"]) > 64, "a message's bytes reach Redis");
      assert.notEqual(row["Redis output-buffer cuts"], null);
    } else {
      assert.equal(row["Redis µs/msg"], null);
    }
  }
  for (const row of rate?.rows ?? []) assert.equal(row.lost, 0, `${row.broker} at a fixed rate`);
  for (const row of fullSpeed?.rows ?? [])
    assert.ok(Number(row.published) <= 10 * 10_000, "each publisher stopped at its cap");
  for (const row of connects?.rows ?? []) {
    assert.ok(Number(row["connects/s"]) > 0);
    assert.ok(Number(row["node µs/connect"]) > 0, `${row.broker}: node CPU per connect`);
    if (row.broker === "sluice-redis") {
      assert.ok(Number(row["Redis µs/connect"]) > 0, "Redis CPU per connect");
      assert.ok(Number(row["Redis cmds/connect"]) > 0, "Redis commands per connect");
    } else {
      assert.equal(row["Redis cmds/connect"], null);
    }
  }
  assert.ok(
    goals?.rows.some((g) => String(g.measure).startsWith("node CPU per message")),
    "the goal table compares the node over Redis with the node in memory",
  );
});

test("smoke - cluster-cost --phases connects measures connects/s alone", async () => {
  const output = await runQuick("cluster-cost", ["sluice", "sluice-redis"], ["connects"]);
  assert.deepEqual(output.rows, [], "no message phase ran");
  assert.deepEqual(
    output.tables?.map((t) => t.title),
    [
      "cluster-cost: the issue's goals (ratios within this run)",
      "cluster-cost: connects/s, 200 idle clients",
    ],
  );
  const goals = output.tables?.[0]?.rows ?? [];
  assert.deepEqual(
    goals.map((g) => g.measure),
    ["connects/s, over Redis / in memory"],
  );
});

test("smoke - mqtt5 --quick measures 3.1.1 and MQTT 5 clients on one node and reports their ratios", async () => {
  const output = await runQuick("mqtt5");
  assert.deepEqual(
    output.rows.map((r) => [r.broker, r.qos, r.targetRate, r.protocolVersion]),
    [
      ["sluice", 0, null, 4],
      ["sluice", 0, null, 5],
      // both levels at once, 2,500 msg/s each
      ["sluice", 1, 2_500, 4],
      ["sluice", 1, 2_500, 5],
    ],
  );
  for (const row of output.rows) {
    assert.equal(row.error, undefined);
    assert.ok(row.messagesPerSecond > 0, `MQTT ${row.protocolVersion} QoS ${row.qos} delivered`);
    assert.equal(row.lost, 0);
    assert.equal(row.duplicates, 0);
  }
  const goals = onlyTableRows(output);
  assert.deepEqual(
    goals.map((g) => [g.measure, g.goal]),
    [
      ["throughput, QoS 0", "≥ 0.9x"],
      ["p99 at 5,000 msg/s, QoS 1", "≤ 1.2x"],
    ],
  );
  for (const goal of goals) {
    assert.ok(Number(goal["v5 / v3.1.1"]) > 0, `${goal.measure}: a ratio`);
    assert.equal(typeof goal.met, "boolean");
  }
});

test("smoke - shared --quick: each message reaches the group once, paced members share evenly and are the limit", async () => {
  const output = await runQuick("shared", ["sluice-cluster-2"]);
  const [goals, cases] = output.tables ?? [];
  assert.ok(
    goals?.rows.some((r) => String(r.measure).startsWith("cost of sharing")),
    "the cost of sharing is reported",
  );
  const rows = onlyTableRows({ rows: [], tables: cases ? [cases] : [], config: {} });
  assert.deepEqual(
    rows.map((r) => [r.phase, r.receivers]),
    [
      ["capacity", "normal subscription, 1 subscriber"],
      ["capacity", "$share, 1 member"],
      ["scale-out", "$share, 2 members, 4 ms/msg each"],
      ["burst", "$share, 2 members"],
    ],
  );
  for (const row of rows) {
    assert.ok(Number(row["delivered msg/s"]) > 0, `${row.phase} ${row.receivers} delivered`);
    assert.equal(row.lost, 0, `${row.phase} ${row.receivers}: nothing lost`);
    if (row.receivers === "normal subscription, 1 subscriber") continue;
    assert.ok(
      Number(row["shared delivered (nodes)"]) >= Number(row.published),
      `the nodes counted every delivery: ${row["shared delivered (nodes)"]} of ${row.published}`,
    );
    assert.equal(row["shared dropped"], "0");
  }
  const scaleOut = rows.find((r) => r.phase === "scale-out");
  const shares = String(scaleOut?.["members' shares"])
    .split(" ")
    .map((s) => Number.parseInt(s, 10));
  assert.equal(shares.length, 2);
  for (const share of shares) assert.ok(share >= 85 && share <= 115, `even shares: ${shares}`);
  assert.ok(
    Number(scaleOut?.["delivered msg/s"]) <= 1.1 * Number(scaleOut?.["member capacity msg/s"]),
    `paced members are the limit: ${scaleOut?.["delivered msg/s"]} msg/s`,
  );
});
