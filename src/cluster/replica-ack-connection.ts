import type { Redis, RedisOptions } from "ioredis";
import type { SluiceConfig } from "../config/schema.js";
import { ReplicaAcks } from "../engine/replica-acks.js";
import type { Logger } from "../observability/logger.js";
import type { RedisClient } from "../redis/redis-client.js";
import { type NodeInstance, nodeConnectionName } from "./node-connections.js";

type RedisConfig = NonNullable<SluiceConfig["redis"]>;

/**
 * The replica confirmations of a node (engine/replica-acks.ts) and the connection they go on,
 * or none: asked for none, or a Redis Cluster (its writes spread over primaries, each with its
 * own replicas).
 */
export function replicaAcksOn(
  config: RedisConfig,
  connect: (
    extra: Pick<
      RedisOptions,
      "keyPrefix" | "connectionName" | "enableOfflineQueue" | "autoResendUnfulfilledCommands"
    >,
  ) => RedisClient,
  node: NodeInstance,
  log: Logger,
): { acks: ReplicaAcks; connection: Redis } | undefined {
  const options = replicaAckOptions(config);
  if (config.cluster !== undefined || options.replicas === 0) return undefined;
  const connection = connect({
    keyPrefix: config.keyPrefix,
    connectionName: nodeConnectionName(node, "replica-acks"),
    // A confirmation goes to the server that answered the writes before it, or fails.
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
  }) as Redis;
  return {
    acks: new ReplicaAcks(connection, options, log.child({ module: "replicas" })),
    connection,
  };
}

/** `redis.replicaAcks`, its replicas resolved: 1 with Sentinel, else 0, unless set. */
function replicaAckOptions(config: RedisConfig): { replicas: number; timeoutMs: number } {
  const { replicas, timeoutMs } = config.replicaAcks;
  return { replicas: replicas ?? (config.sentinels === undefined ? 0 : 1), timeoutMs };
}
