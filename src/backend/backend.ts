import type { UsernameQuota } from "../admission/cluster-connection-counts.js";
import type { ConnectionQuotas } from "../admission/connection-quotas.js";
import type { FlappingGuard } from "../admission/flapping-guard.js";
import type { ClientOwnership } from "../cluster/client-ownership.js";
import type { NodeDeaths } from "../cluster/node-deaths.js";
import type { RedisFabric } from "../cluster/redis-fabric.js";
import type { RedisFence } from "../cluster/redis-fence.js";
import type { LocalSessions, SessionDirectory } from "../cluster/session-directory.js";
import type { SessionRegistry } from "../cluster/session-registry.js";
import type { SessionTimers } from "../cluster/session-timers.js";
import type { WillClaims } from "../cluster/will-claims.js";
import type { RedisClient } from "../redis/redis-client.js";
import type { DeviceStore } from "../registry/device-store.js";
import type { AuthLockout } from "../security/auth-lockout.js";
import type { DecoySecret } from "../security/decoy-secret.js";
import type { SharedGroupStore } from "../shared-subscriptions/group-store.js";
import type { DeviceCertificateIndex } from "../sparkplug/device-certificate-index.js";

/**
 * Everything that differs between a node alone (in memory) and a node of a cluster (over
 * Redis), chosen once, in createBackend(): the rest of the node never asks which it is.
 */
export interface Backend {
  readonly kind: "memory" | "redis";
  /** What aedes stores sessions, retained messages and wills in, and its emitter if shared. */
  readonly store: { persistence: unknown; mq?: unknown };
  /** The Redis connections and their events; undefined in memory. */
  readonly fabric: RedisFabric | undefined;
  readonly lockout: AuthLockout;
  readonly sessions: SessionRegistry;
  /** Fenced client-id takeover across nodes; undefined alone, where aedes closes the old one. */
  readonly ownership: ClientOwnership | undefined;
  /** Which survivor publishes a dead node's will; undefined alone. */
  readonly willClaims: WillClaims | undefined;
  /** Whether a silent node is gone (its lease, its connections); undefined alone. */
  readonly nodeDeaths: NodeDeaths | undefined;
  /** MQTT 5 session expiry and will delay in Redis; undefined alone (aedes' own timers). */
  readonly timers: SessionTimers | undefined;
  readonly deviceStore: DeviceStore | undefined;
  /** Shared subscriptions' groups, members and queues: this node's, or the cluster's. */
  readonly sharedGroups: SharedGroupStore;
  readonly flapping: FlappingGuard | undefined;
  readonly usernames: UsernameQuota | undefined;
  /** Where cluster-wide limit counters live; undefined in memory (per node). */
  readonly limitsRedis: RedisClient | undefined;
  /** Socket quotas; the cluster-wide one counts the other nodes' connections from Redis. */
  readonly quotas: ConnectionQuotas;
  /** Self-fencing when Redis stops answering; undefined in memory or when turned off. */
  readonly fence: RedisFence | undefined;
  /** Whether the node's shared state is reachable, for /readyz. */
  isUp(): boolean;
  retainedCount(): Promise<number>;
  /** The admin API's view of live sessions: this node's own, or the cluster's. */
  sessionDirectory(
    local: LocalSessions,
    broadcast: (topic: string, payload: Buffer) => void,
  ): SessionDirectory;
  close(): Promise<void>;
  /** Unknown users' made-up SCRAM salts come from this: the node's, or the cluster's. */
  readonly decoySecret: DecoySecret;
  /** Sparkplug: which devices of each edge node have DBIRTH certificates. */
  readonly sparkplugCertificates: DeviceCertificateIndex;
}
