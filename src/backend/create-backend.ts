import { Redis } from "ioredis";
import {
  ClusterConnectionCounts,
  LocalUsernameQuota,
} from "../admission/cluster-connection-counts.js";
import { ConnectionQuotas } from "../admission/connection-quotas.js";
import { FlappingGuard } from "../admission/flapping-guard.js";
import { ClientOwnership } from "../cluster/client-ownership.js";
import { ConnectionDeathProof, RedisServerIdentity } from "../cluster/connection-death.js";
import { type NodeInstance, newNodeInstance, serverKeyValue } from "../cluster/node-connections.js";
import { NodeDeaths } from "../cluster/node-deaths.js";
import { NODE_LEASE_KEY_PREFIX, NodeRegistry } from "../cluster/node-registry.js";
import { RedisFabric } from "../cluster/redis-fabric.js";
import { RedisFence } from "../cluster/redis-fence.js";
import { RedisGroupStore } from "../cluster/redis-group-store.js";
import { ClusterSessionDirectory, LocalSessionDirectory } from "../cluster/session-directory.js";
import { MemorySessionRegistry, RedisSessionRegistry } from "../cluster/session-registry.js";
import { SessionTimers } from "../cluster/session-timers.js";
import { WillClaims } from "../cluster/will-claims.js";
import type { SluiceConfig } from "../config/schema.js";
import { closeWithWill, publishVia } from "../engine/aedes-internals.js";
import { memoryEmitter } from "../engine/emitters.js";
import { MemoryPersistence } from "../engine/memory-persistence.js";
import type { QueueLimits } from "../engine/persistence-types.js";
import { ReasonCode } from "../errors.js";
import type { Logger } from "../observability/logger.js";
import type { SluiceMetrics } from "../observability/metrics.js";
import { FileDeviceStore } from "../registry/file-device-store.js";
import { RedisDeviceStore } from "../registry/redis-device-store.js";
import { AuthLockout } from "../security/auth-lockout.js";
import { localDecoySecret, redisDecoySecret } from "../security/decoy-secret.js";
import { MemoryGroupStore } from "../shared-subscriptions/memory-group-store.js";
import {
  MemoryDeviceCertificateIndex,
  RedisDeviceCertificateIndex,
} from "../sparkplug/device-certificate-index.js";
import type { Backend } from "./backend.js";

/** What aedes gives its own emitter: how many messages it hands on at once. */
const AEDES_CONCURRENCY = 100;
/** A node waits for Redis at start as long as it takes; past this it says so in the log. */
const REDIS_FIRST_WAIT_MS = 2_000;
/** How often a node looks for session timers that fell due (and every 4, for dead nodes). */
const TIMER_POLL_MS = 250;

export interface BackendDeps {
  log: Logger;
  metrics: SluiceMetrics;
  /** The cap on each session's stored queue. */
  queue: QueueLimits;
}

/** The in-memory set for a node alone, or the Redis set for a node of a cluster. */
export function createBackend(config: SluiceConfig, deps: BackendDeps): Promise<Backend> {
  return config.redis === undefined ? memoryBackend(config, deps) : redisBackend(config, deps);
}

async function memoryBackend(config: SluiceConfig, deps: BackendDeps): Promise<Backend> {
  const { authFailures, flapping, connections } = config.limits;
  const persistence = new MemoryPersistence(deps.queue);
  const usernames =
    connections.perUsername === undefined
      ? undefined
      : new LocalUsernameQuota(connections.perUsername);
  return {
    kind: "memory",
    // aedes' default emitter, with its release loop fixed (see engine/emitters.ts).
    store: { persistence, mq: memoryEmitter(AEDES_CONCURRENCY) },
    fabric: undefined,
    lockout: AuthLockout.inMemory(authFailures),
    sessions: new MemorySessionRegistry(),
    ownership: undefined,
    willClaims: undefined,
    nodeDeaths: undefined,
    timers: undefined,
    fence: undefined,
    deviceStore: config.registry ? await FileDeviceStore.open(config.registry.file) : undefined,
    sharedGroups: new MemoryGroupStore(sharedGroupLimits(config)),
    flapping: flapping === undefined ? undefined : FlappingGuard.inMemory(flapping),
    usernames,
    limitsRedis: undefined,
    quotas: new ConnectionQuotas(connections),
    isUp: () => true,
    retainedCount: async () => persistence.retainedCount(),
    sessionDirectory: (local) => new LocalSessionDirectory(local),
    decoySecret: localDecoySecret(),
    sparkplugCertificates: new MemoryDeviceCertificateIndex(),
    close: async () => {},
  };
}

async function redisBackend(config: SluiceConfig, deps: BackendDeps): Promise<Backend> {
  const redis = config.redis as NonNullable<SluiceConfig["redis"]>;
  const node = newNodeInstance(config.nodeId);
  const fabric = new RedisFabric(redis, node, deps.log.child({ module: "redis" }), deps.queue);
  fabric.on("state", (up) => deps.metrics.setRedisUp(up));
  fabric.on("subscription-reset", () => deps.metrics.markRedisSubscriptionReset());
  fabric.on("undecodable-message", () => deps.metrics.markMessageDropped("undecodable"));
  fabric.replicaAcks?.on("missed", (count) => deps.metrics.markReplicaAcksMissed(count));
  try {
    return await onFabric(config, redis, fabric, node, deps);
  } catch (error) {
    // A start that fails here (the node id is held by a live node) leaves no connection open.
    await fabric.close();
    throw error;
  }
}

async function onFabric(
  config: SluiceConfig,
  redis: NonNullable<SluiceConfig["redis"]>,
  fabric: RedisFabric,
  node: NodeInstance,
  deps: BackendDeps,
): Promise<Backend> {
  const { authFailures, flapping, connections } = config.limits;
  const log = deps.log.child({ module: "node" });
  if (!(await fabric.waitUntilReady(REDIS_FIRST_WAIT_MS))) {
    log.warn(
      { event: "redis.waiting" },
      "waiting for Redis before taking clients (not ready until then)",
    );
    await fabric.waitUntilReady();
  }
  const clusterLog = deps.log.child({ module: "cluster" });
  const leaseMs = redis.nodeLeaseSeconds * 1000;
  const { state } = fabric;
  // Where this node's connections are, kept beside its lease, lets the others tell when they
  // have all closed (connection-death.ts).
  const server =
    state instanceof Redis ? new RedisServerIdentity(state, () => registry.renew()) : undefined;
  const registry: NodeRegistry = new NodeRegistry(state, config.nodeId, leaseMs, clusterLog, () =>
    server?.runId === undefined ? undefined : serverKeyValue(server.runId, node),
  );
  server?.start();
  await registry.claim();
  const proof = redis.deadNodeByConnections
    ? new ConnectionDeathProof(state, leaseMs, clusterLog)
    : undefined;
  const quotas: ConnectionQuotas = new ConnectionQuotas(connections, (): number =>
    counts.otherNodesOpen(),
  );
  const counts: ClusterConnectionCounts = new ClusterConnectionCounts(
    fabric.state,
    config.nodeId,
    leaseMs,
    connections.perUsername,
    (): number => quotas.openConnections,
    deps.log.child({ module: "admission" }),
  );
  counts.start();
  const timers = new SessionTimers(
    {
      redis: fabric.state,
      nodeId: config.nodeId,
      pollMs: TIMER_POLL_MS,
      log: clusterLog,
      onSessionExpired: () => deps.metrics.markSessionExpired(),
    },
    NODE_LEASE_KEY_PREFIX,
  );
  const sessions = new RedisSessionRegistry(
    fabric.state,
    config.nodeId,
    NODE_LEASE_KEY_PREFIX,
    fabric.persistence,
    timers.intervalsKeyPrefix,
  );
  const ownership = new ClientOwnership(
    sessions,
    {
      publish: publishVia,
      close: (client) => void closeWithWill(client, { reasonCode: ReasonCode.SessionTakenOver }),
    },
    clusterLog,
    (cause) => deps.metrics.markOwnershipConflict(cause),
  );
  const fence = buildFence(redis, fabric, leaseMs, deps.metrics, clusterLog);
  return {
    kind: "redis",
    store: { persistence: fabric.persistence, mq: fabric.mq },
    fabric,
    lockout: AuthLockout.inRedis(authFailures, fabric.state),
    sessions,
    ownership,
    willClaims: new WillClaims(fabric.state),
    nodeDeaths: new NodeDeaths(state, proof, redis.heartbeatMs),
    timers,
    fence,
    deviceStore: new RedisDeviceStore(fabric.state),
    sharedGroups: new RedisGroupStore(
      fabric.state,
      sharedGroupLimits(config),
      NODE_LEASE_KEY_PREFIX,
    ),
    flapping: flapping === undefined ? undefined : FlappingGuard.inRedis(flapping, fabric.state),
    usernames: counts,
    limitsRedis: fabric.state,
    quotas,
    isUp: () => fabric.isUp() && fence?.fenced !== true,
    retainedCount: () => fabric.retainedCount(),
    sessionDirectory: (_local, broadcast) =>
      new ClusterSessionDirectory(sessions, fabric.state, NODE_LEASE_KEY_PREFIX, broadcast),
    decoySecret: redisDecoySecret(fabric.state),
    sparkplugCertificates: new RedisDeviceCertificateIndex(fabric.state),
    close: async () => {
      fence?.stop();
      counts.stop();
      await timers.stop();
      await registry.release();
      await fabric.close();
    },
  };
}

/**
 * A member's shared messages also wait in its connection's queue: one dropped there would stay
 * with the member in Redis until it leaves, so a member holds no more than that queue takes.
 */
function sharedGroupLimits(config: SluiceConfig): { maxQueued: number; maxGroups: number } {
  const { maxQueued, maxGroups } = config.sharedSubscriptions;
  return { maxQueued: Math.min(maxQueued, config.limits.queue.maxQueuedPerClient), maxGroups };
}

/**
 * The node's fence (`redis.fence`): it times a PING to Redis, and when none is answered for
 * `afterMs` (two thirds of the lease unless set) it reconnects every Redis connection, which a
 * partition leaves hanging. Its clients and readiness are the node's (ClusterSignals, isUp).
 */
function buildFence(
  redis: NonNullable<SluiceConfig["redis"]>,
  fabric: RedisFabric,
  leaseMs: number,
  metrics: SluiceMetrics,
  log: Logger,
): RedisFence | undefined {
  const { enabled, probeMs, afterMs } = redis.fence;
  if (!enabled) return undefined;
  const fence = new RedisFence(
    fabric.state,
    { probeMs, afterMs: afterMs ?? Math.round((leaseMs * 2) / 3) },
    metrics,
    log,
  );
  fence.on("fenced", () => fabric.reconnect());
  fence.start();
  return fence;
}
