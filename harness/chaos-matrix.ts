import type { MqttClient } from "mqtt";
import type { ChaosScenario } from "./chaos-scenario.js";
import { withDeadline } from "./deadline.js";
import { HOST } from "./fault-network.js";
import { closedAfter, connect } from "./mqtt-client.js";

/**
 * Issue 17's scenarios, each a ChaosScenario for runChaos(): the chaos tests run the short
 * ones, `npm run bench -- chaos` runs them all (the 60 s cut too). Two nodes behind HAProxy;
 * `leaseSeconds` shortens the node lease (and so the fence, two thirds of it) for a fence
 * within a short cut.
 */

const TWO_NODES = ["node-a", "node-b"] as const;

function redisConfig(leaseSeconds: number | undefined): string | undefined {
  return leaseSeconds === undefined
    ? undefined
    : `  nodeLeaseSeconds: ${leaseSeconds}\n  heartbeatMs: 250`;
}

function twoNodes(leaseSeconds?: number) {
  const config = redisConfig(leaseSeconds);
  return { nodes: TWO_NODES, ...(config ? { redisConfig: config } : {}) };
}

const suffix = (leaseSeconds: number | undefined) =>
  leaseSeconds === undefined ? "" : `-lease${leaseSeconds}s`;

const seconds = (ms: number) => (ms < 1_000 ? `${ms}ms` : `${ms / 1_000}s`);

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** 1. node-a cut from Redis (both ways) for `ms`; its clients stay connected to it. */
export function redisCut(ms: number, leaseSeconds?: number): ChaosScenario {
  return {
    name: `node-redis-cut-${seconds(ms)}${suffix(leaseSeconds)}`,
    cluster: twoNodes(leaseSeconds),
    watched: "node-a",
    settleMs: Math.max(30_000, ms),
    fault: async ({ network }) => {
      await network.cut("node-a", "redis", ms).healed;
      return undefined;
    },
  };
}

/**
 * 1. One way only: Redis' packets to node-a dropped for `ms`, node-a's still arrive (its
 * PUBLISHes reach the other nodes; no answer reaches it, so it acknowledges nothing).
 */
export function redisCutOneWay(ms: number): ChaosScenario {
  return {
    name: `redis-to-node-cut-${seconds(ms)}-one-way`,
    cluster: twoNodes(),
    watched: "node-a",
    fault: async ({ network }) => {
      await network.cut("redis", "node-a", ms, { oneWay: true }).healed;
      return undefined;
    },
  };
}

/** 2. Every node's Redis link `delayMs` slower each way (a delay relay) for `ms`. */
export function redisLatency(delayMs: number, ms = 5_000): ChaosScenario {
  return {
    name: `redis-latency-${delayMs}ms`,
    cluster: { nodes: TWO_NODES, redisThroughRelay: true },
    watched: "node-a",
    fault: async (cluster) => {
      const relay = cluster.relay;
      if (!relay) throw new Error("no relay");
      relay.setDelay(delayMs);
      try {
        await pause(ms);
      } finally {
        relay.setDelay(0);
      }
      return undefined;
    },
  };
}

/** 2. `percent` % of node-a's packets to and from Redis dropped for `ms`. */
export function redisLoss(percent: number, ms = 5_000): ChaosScenario {
  return {
    name: `redis-loss-${percent}pct`,
    cluster: { nodes: TWO_NODES },
    watched: "node-a",
    fault: async ({ network }) => {
      await network.loss("node-a", "redis", percent, ms).healed;
      return undefined;
    },
  };
}

/**
 * 3. node-a cut from the load balancer (and the test's clients) for `ms` while it reaches
 * Redis: HAProxy drops its sessions, the clients reconnect to node-b while node-a still holds
 * their old connections. `takenOverOnA`: the connections node-a closed for newer ones.
 */
export function lbCut(ms = 5_000): ChaosScenario {
  return {
    name: `node-lb-cut-${seconds(ms)}`,
    cluster: { nodes: TWO_NODES },
    fault: async (cluster) => {
      await cluster.network.cut(HOST, "node-a", ms).healed;
      const lines = cluster.node("node-a").process.lines;
      return { takenOverOnA: lines.filter((l) => l.event === "client.taken_over").length };
    },
  };
}

/**
 * 4. Sentinel fails the primary over under load (the primary killed). `switchedAfterMs`: until
 * a Sentinel announced the new primary; `upAfterMs`: until every node reached it.
 */
export function sentinelFailover(): ChaosScenario {
  return {
    name: "sentinel-failover",
    cluster: { nodes: TWO_NODES, sentinels: true },
    // Recovered within 2.3 s; a will refused in the outage goes out once Redis takes it.
    settleMs: 15_000,
    fault: (cluster) => killPrimaryAndFollow(cluster),
  };
}

/**
 * 4. Two failovers under load: the primary killed, then, a second after every node reached the
 * promoted replica, Sentinel asked to fail over again (as a loaded Sentinel group may do on its
 * own, the new primary missing its pings): the last replica is promoted, and acknowledgements
 * wait until the old primary, demoted, replicates from it.
 */
export function sentinelFailoverTwice(): ChaosScenario {
  return {
    name: "sentinel-failover-twice",
    cluster: { nodes: TWO_NODES, sentinels: true },
    // QoS 2 publishers wait about 15 s for the last replica's resync, then send their backlog
    settleMs: 45_000,
    fault: async (cluster) => {
      const sentinels = sentinelsOf(cluster);
      await killPrimaryAndFollow(cluster);
      await pause(1_000);
      const againAt = Date.now();
      // Refused (NOGOODSLAVE) until the Sentinels know the other replica follows the new primary.
      await untilAccepted(() => sentinels.switchover(), 20_000);
      await sentinels.waitForSwitch(20_000, 2);
      await nodesUpSince(cluster, againAt);
      return { secondSwitchAfterMs: Date.now() - againAt };
    },
  };
}

type Cluster = Parameters<ChaosScenario["fault"]>[0];

function sentinelsOf(cluster: Cluster): NonNullable<Cluster["sentinels"]> {
  if (!cluster.sentinels) throw new Error("no sentinels");
  return cluster.sentinels;
}

/** Kills the primary; resolves once a Sentinel announced the new one and every node reached it. */
async function killPrimaryAndFollow(
  cluster: Cluster,
): Promise<{ switchedAfterMs: number; upAfterMs: number }> {
  const sentinels = sentinelsOf(cluster);
  const killedAt = Date.now();
  await sentinels.killPrimary();
  await sentinels.waitForSwitch(20_000);
  const switchedAfterMs = Date.now() - killedAt;
  await nodesUpSince(cluster, killedAt);
  return { switchedAfterMs, upAfterMs: Date.now() - killedAt };
}

/** Resolves once every node logged `redis.up` at or after `at`. */
async function nodesUpSince(cluster: Cluster, at: number): Promise<void> {
  await Promise.all(
    cluster.nodes.map((node) =>
      node.process.waitForLog((l) => l.event === "redis.up" && Number(l.time) >= at),
    ),
  );
}

/** Calls `ask` every 200 ms until it resolves (a Sentinel accepting a failover), for `ms`. */
async function untilAccepted(ask: () => Promise<unknown>, ms: number): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    try {
      await ask();
      return;
    } catch (error) {
      if (Date.now() >= until) throw error;
      await pause(200);
    }
  }
}

/**
 * 4. Redis restarts without its data under load (killed, started empty on the same address).
 * What it held is lost by definition: no-loss is checked from the moment every node has taken
 * its lease again and every persistent subscriber has subscribed again on a new session
 * (`resubscribedAfterMs`), then 1 s of traffic.
 */
export function redisRestartEmpty(): ChaosScenario {
  return {
    name: "redis-restart-empty",
    cluster: { nodes: TWO_NODES },
    // A will published while Redis is away reaches no subscriber: they are all re-subscribing.
    killWill: false,
    fault: async (cluster, workload) => {
      const redis = cluster.redis;
      if (!redis) throw new Error("no redis");
      await redis.kill();
      await redis.start();
      const restartedAt = Date.now();
      await Promise.all(
        cluster.nodes.map((node) =>
          node.process.waitForLog(
            (l) => l.event === "node.lease_retaken" && Number(l.time) >= restartedAt,
          ),
        ),
      );
      await workload.resubscribedSince(restartedAt, 20_000);
      const resubscribedAfterMs = Date.now() - restartedAt;
      workload.lostBefore();
      await pause(1_000);
      return { resubscribedAfterMs };
    },
  };
}

/**
 * 5. node-a cut from Redis for `ms` while both nodes keep clients; one client id connects to
 * node-a, then during the cut to node-b (which reaches Redis and takes the id over).
 * `olderClosedAfterHealMs`: when node-a closed the older connection, from the heal (absent:
 * closed before, by the fence); `newerConnected`: the newer one survived.
 */
export function splitClientId(ms = 5_000, leaseSeconds?: number): ChaosScenario {
  return {
    name: `split-client-id-${seconds(ms)}${suffix(leaseSeconds)}`,
    cluster: twoNodes(leaseSeconds),
    watched: "node-a",
    fault: async (cluster, workload) => {
      const options = { clientId: `${workload.run}-twin`, clean: false, reconnectPeriod: 0 };
      let older: MqttClient | undefined;
      let newer: MqttClient | undefined;
      try {
        older = await connect(cluster.node("node-a").url, options);
        older.on("error", () => {});
        const cut = cluster.network.cut("node-a", "redis", ms);
        await cut.applied;
        newer = await connect(cluster.node("node-b").url, options);
        newer.on("error", () => {});
        await cut.healed;
        const healedAt = Date.now();
        const wasOpen = older.connected;
        const closed = await withDeadline(closedAfter(older, healedAt), 20_000, "older closed");
        return {
          olderClosedAfterHealMs: wasOpen ? closed : undefined,
          newerConnected: newer.connected,
        };
      } finally {
        older?.end(true);
        newer?.end(true);
      }
    },
  };
}

/**
 * 4b. node-a killed outright (SIGKILL) under load, with a `leaseSeconds` lease: its clients
 * reconnect to node-b through HAProxy; once node-a's lease is gone from Redis
 * (`leaseGoneAfterMs`: node-b may count it dead) node-a starts again. Shared members on node-a
 * resume on node-b with what their group's queues held for them.
 */
export function nodeKill(leaseSeconds = 3): ChaosScenario {
  return {
    name: `node-sigkill${suffix(leaseSeconds)}`,
    cluster: twoNodes(leaseSeconds),
    fault: async (cluster) => {
      const killedAt = Date.now();
      let leaseGoneAfterMs: number | undefined;
      await cluster.crash("node-a", async () => {
        // Redis tells no one when a key expires: read every 100 ms, up to twice the lease.
        const deadline = killedAt + 2_000 * leaseSeconds;
        while (!(await cluster.leaseGone("node-a"))) {
          if (Date.now() > deadline) throw new Error("node-a's lease outlived twice its length");
          await pause(100);
        }
        leaseGoneAfterMs = Date.now() - killedAt;
      });
      return { leaseGoneAfterMs, restartedAfterMs: Date.now() - killedAt };
    },
  };
}

/** Every scenario, for the bench: the long cuts too. */
export function fullMatrix(): ChaosScenario[] {
  return [
    redisCut(200),
    redisCut(5_000),
    redisCut(60_000),
    redisCut(5_000, 3),
    redisCutOneWay(5_000),
    redisLatency(50),
    redisLatency(500),
    redisLoss(5),
    lbCut(5_000),
    splitClientId(5_000),
    splitClientId(5_000, 3),
    sentinelFailover(),
    sentinelFailoverTwice(),
    redisRestartEmpty(),
    nodeKill(3),
  ];
}
