import type { RedisClient } from "../redis/redis-client.js";
import type { RedisSessionRegistry } from "./session-registry.js";

/** A client connected somewhere in the cluster. */
export interface SessionInfo {
  clientId: string;
  node: string;
  /** When this connection claimed its client id (ISO 8601), where known. */
  connectedAt?: string;
}

/** The cluster's live connections, as the admin API lists and closes them. */
export interface SessionDirectory {
  list(limit: number): Promise<{ sessions: SessionInfo[]; truncated: boolean }>;
  /** Closes the client's connection on whatever node holds it; false when none does. */
  disconnect(clientId: string): Promise<boolean>;
}

/** The topic on which any node asks all nodes to close a client's connection. */
export const DISCONNECT_TOPIC = "$SYS/sluice/disconnect";

/** This node's own connections, for a node without Redis. */
export interface LocalSessions {
  nodeId: string;
  /** Client ids connected here, with when they connected (ms), if known. */
  connected(): Iterable<{ clientId: string; connectedAt?: number }>;
  /** Closes the client's connection here; false when it is not connected here. */
  disconnect(clientId: string): boolean;
}

/** A single node's sessions: its own connections. */
export class LocalSessionDirectory implements SessionDirectory {
  constructor(private readonly local: LocalSessions) {}

  async list(limit: number): Promise<{ sessions: SessionInfo[]; truncated: boolean }> {
    const sessions: SessionInfo[] = [];
    for (const { clientId, connectedAt } of this.local.connected()) {
      if (sessions.length === limit) return { sessions, truncated: true };
      sessions.push({
        clientId,
        node: this.local.nodeId,
        ...(connectedAt === undefined ? {} : { connectedAt: new Date(connectedAt).toISOString() }),
      });
    }
    return { sessions, truncated: false };
  }

  async disconnect(clientId: string): Promise<boolean> {
    return this.local.disconnect(clientId);
  }
}

/**
 * The cluster's sessions from the owner entries in Redis (one per live connection, written at
 * CONNECT). Entries of a node that died without cleaning up are left out by its expired lease.
 * A disconnect is broadcast; the node holding the client closes it.
 */
export class ClusterSessionDirectory implements SessionDirectory {
  constructor(
    private readonly sessions: RedisSessionRegistry,
    private readonly redis: RedisClient,
    private readonly leaseKeyPrefix: string,
    private readonly broadcast: (topic: string, payload: Buffer) => void,
  ) {}

  async list(limit: number): Promise<{ sessions: SessionInfo[]; truncated: boolean }> {
    const { owners, truncated } = await this.sessions.owners(limit);
    const live = await this.liveNodes(new Set(owners.map((o) => o.node)));
    return {
      sessions: owners
        .filter((o) => live.has(o.node))
        .map((o) => ({
          clientId: o.clientId,
          node: o.node,
          connectedAt: new Date(Math.floor(o.epoch / 1000)).toISOString(),
        })),
      truncated,
    };
  }

  async disconnect(clientId: string): Promise<boolean> {
    const owner = await this.sessions.ownerOf(clientId);
    if (owner === undefined || !(await this.liveNodes(new Set([owner.node]))).has(owner.node)) {
      return false;
    }
    this.broadcast(DISCONNECT_TOPIC, Buffer.from(clientId, "utf8"));
    return true;
  }

  private async liveNodes(nodes: Set<string>): Promise<Set<string>> {
    const list = [...nodes];
    if (list.length === 0) return new Set();
    const pipeline = this.redis.pipeline();
    for (const node of list) pipeline.exists(`${this.leaseKeyPrefix}${node}`);
    const results = (await pipeline.exec()) ?? [];
    return new Set(list.filter((_, i) => results[i]?.[1] === 1));
  }
}
