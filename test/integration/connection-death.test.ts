import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, describe, it } from "node:test";
import { Redis } from "ioredis";
import { LogCapture } from "../../harness/log-capture.js";
import { RedisServer } from "../../harness/redis-server.js";
import {
  ConnectionDeathProof,
  RedisServerIdentity,
  runIdOf,
} from "../../src/cluster/connection-death.js";
import {
  type NodeInstance,
  newNodeInstance,
  nodeConnectionName,
  serverKeyValue,
} from "../../src/cluster/node-connections.js";
import { NodeDeaths } from "../../src/cluster/node-deaths.js";
import {
  NODE_LEASE_KEY_PREFIX,
  NODE_SERVER_KEY_PREFIX,
  NodeRegistry,
} from "../../src/cluster/node-registry.js";

/**
 * A silent node proven gone by its connections (real Redis, real connections): a node's lease
 * carries the run id of its Redis server; once Redis holds none of the node's named connections
 * on that server, the proof releases its lease; a node still connected, one whose key names
 * another server, or a Redis whose `timeout` would close a cut node's connections, is not.
 */
const LEASE_MS = 15_000;
let redis: RedisServer;
let judge: Redis;
const open: Redis[] = [];

before(async () => {
  redis = await RedisServer.start();
  judge = new Redis(redis.url);
});
after(async () => {
  for (const connection of [judge, ...open]) connection?.disconnect();
  await redis?.stop();
});

async function runId(): Promise<string> {
  const id = runIdOf(await judge.info("server"));
  assert.ok(id, "INFO server has a run id");
  return id;
}

/** A node process's named connection, with its lease and server key as its registry writes them. */
async function liveNode(
  nodeId: string,
  server: string,
  node: NodeInstance = newNodeInstance(nodeId),
): Promise<Redis> {
  const connection = new Redis(redis.url, { connectionName: nodeConnectionName(node, "state") });
  open.push(connection);
  await once(connection, "ready");
  await judge.set(`${NODE_LEASE_KEY_PREFIX}${nodeId}`, "token", "PX", LEASE_MS);
  await judge.set(
    `${NODE_SERVER_KEY_PREFIX}${nodeId}`,
    serverKeyValue(server, node),
    "PX",
    LEASE_MS,
  );
  return connection;
}

/** Resolves once Redis no longer lists a connection of the node (it handled the close). */
async function untilRedisDropped(nodeId: string, ms: number): Promise<void> {
  const name = ` name=sluice/${nodeId}/`;
  const deadline = Date.now() + ms;
  while ((await redis.otherClients()).some((line) => line.includes(name))) {
    if (Date.now() > deadline) throw new Error(`Redis still lists ${nodeId} after ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const leaseOf = (nodeId: string) => judge.exists(`${NODE_LEASE_KEY_PREFIX}${nodeId}`);

describe("a silent node proven gone by its connections", () => {
  it("is not while its connection is open; is once it closed, and its lease is released", async () => {
    const proof = new ConnectionDeathProof(judge, LEASE_MS, new LogCapture().logger);
    const node = await liveNode("n-1", await runId());
    assert.equal(await proof.provenGone("n-1"), false, "connected: not gone");
    assert.equal(await leaseOf("n-1"), 1);

    node.disconnect();
    await untilRedisDropped("n-1", 5_000);
    assert.equal(await proof.provenGone("n-1"), true, "no connection left: gone");
    assert.equal(await leaseOf("n-1"), 0, "its lease is released for it");
    assert.equal(await judge.exists(`${NODE_SERVER_KEY_PREFIX}n-1`), 0);
  });

  it("is, when a new process under the same id has connected (a StatefulSet's restart)", async () => {
    const proof = new ConnectionDeathProof(judge, LEASE_MS, new LogCapture().logger);
    const old = await liveNode("n-6", await runId());
    old.disconnect();
    await untilRedisDropped("n-6", 5_000);
    const restarted = new Redis(redis.url, {
      connectionName: nodeConnectionName(newNodeInstance("n-6"), "state"),
    });
    open.push(restarted);
    await once(restarted, "ready");
    assert.equal(await proof.provenGone("n-6"), true, "the old process's connections are gone");
    assert.equal(await leaseOf("n-6"), 0, "the restarted process may claim the id at once");
  });

  it("is not when its key names another server (a failover it has not told of yet)", async () => {
    const proof = new ConnectionDeathProof(judge, LEASE_MS, new LogCapture().logger);
    const node = await liveNode("n-2", "0".repeat(40));
    node.disconnect();
    await untilRedisDropped("n-2", 5_000);
    assert.equal(await proof.provenGone("n-2"), false);
    assert.equal(await leaseOf("n-2"), 1, "the lease stays: it alone says when");
  });

  it("is not while Redis' timeout would close a cut node's connections before its lease", async () => {
    await judge.config("SET", "timeout", "5");
    try {
      const log = new LogCapture();
      const proof = new ConnectionDeathProof(judge, LEASE_MS, log.logger);
      const node = await liveNode("n-3", await runId());
      node.disconnect();
      await untilRedisDropped("n-3", 5_000);
      assert.equal(await proof.provenGone("n-3"), false);
      assert.equal(await leaseOf("n-3"), 1);
      const warning = await log.waitFor((l) => l.event === "redis.idle_timeout");
      assert.equal(warning.usable, false);
      assert.equal(warning.timeoutSeconds, 5);
    } finally {
      await judge.config("SET", "timeout", "0");
    }
  });

  it("NodeDeaths: the lease first, the connections at most once a heartbeat", async () => {
    const heartbeatMs = 60_000;
    const proof = new ConnectionDeathProof(judge, LEASE_MS, new LogCapture().logger);
    const deaths = new NodeDeaths(judge, proof, heartbeatMs);
    assert.equal(await deaths.gone("never-seen"), "lease", "no lease: gone");
    const node = await liveNode("n-4", await runId());
    assert.equal(await deaths.gone("n-4"), undefined, "connected");
    node.disconnect();
    await untilRedisDropped("n-4", 5_000);
    assert.equal(await deaths.gone("n-4"), undefined, "asked again within the heartbeat");
    const withoutProof = new NodeDeaths(judge, undefined, heartbeatMs);
    assert.equal(await withoutProof.gone("n-4"), undefined, "lease only: still held");
    assert.equal(await new NodeDeaths(judge, proof, heartbeatMs).gone("n-4"), "connections");
  });

  it("NodeDeaths forgets a node that came back once its heartbeat has passed", async () => {
    // A heartbeat of 0 ms: every earlier answer is already stale at the next question.
    const deaths = new NodeDeaths(
      judge,
      new ConnectionDeathProof(judge, LEASE_MS, new LogCapture().logger),
      0,
    );
    await liveNode("n-6", await runId());
    await liveNode("n-7", await runId());
    assert.equal(await deaths.gone("n-6"), undefined, "connected");
    assert.equal(await deaths.gone("n-7"), undefined, "connected");
    assert.equal(deaths.pendingProofs, 1, "n-6's stale entry dropped");
  });
});

describe("a node's registry keeps its Redis server's run id beside its lease", () => {
  it("writes it at the claim, and the new one after Redis restarted without its data", async () => {
    const connection = new Redis(redis.url);
    open.push(connection);
    const log = new LogCapture();
    const server: RedisServerIdentity = new RedisServerIdentity(connection, () => registry.renew());
    const node = newNodeInstance("n-5");
    const registry: NodeRegistry = new NodeRegistry(connection, "n-5", 3_000, log.logger, () =>
      server.runId === undefined ? undefined : serverKeyValue(server.runId, node),
    );
    server.start();
    await once(connection, "ready");
    const key = `${NODE_SERVER_KEY_PREFIX}n-5`;
    try {
      await registry.claim();
      const first = await runId();
      await untilValue(key, serverKeyValue(first, node), 5_000);

      await redis.stop();
      await redis.start();
      const second = await runId();
      assert.notEqual(second, first, "a restarted Redis has a new run id");
      await untilValue(key, serverKeyValue(second, node), 10_000);
      await log.waitFor((l) => l.event === "node.lease_retaken");
      assert.equal(await leaseOf("n-5"), 1);
    } finally {
      await registry.release();
    }
    assert.equal(await judge.exists(key), 0, "released with the lease");
  });
});

async function untilValue(key: string, value: string, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while ((await judge.get(key).catch(() => null)) !== value) {
    if (Date.now() > deadline) throw new Error(`${key} is not ${value} after ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
