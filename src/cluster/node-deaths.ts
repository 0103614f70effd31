import type { RedisClient } from "../redis/redis-client.js";
import type { ConnectionDeathProof } from "./connection-death.js";
import { NODE_LEASE_KEY_PREFIX } from "./node-registry.js";

/** How a silent node is known to be gone. */
export type DeathSignal = "lease" | "connections";

/**
 * Whether a node that stopped heartbeating is gone, and so its wills are due: its lease ran
 * out, or (sooner) Redis holds none of its connections any more (connection-death.ts). The
 * connection check lists Redis' clients, so it is asked at most once per heartbeat per node.
 */
export class NodeDeaths {
  private readonly provedAt = new Map<string, number>();

  constructor(
    private readonly redis: RedisClient,
    private readonly proof: ConnectionDeathProof | undefined,
    private readonly heartbeatMs: number,
  ) {}

  async gone(nodeId: string): Promise<DeathSignal | undefined> {
    if ((await this.redis.exists(`${NODE_LEASE_KEY_PREFIX}${nodeId}`)) === 0) {
      this.provedAt.delete(nodeId);
      return "lease";
    }
    if (this.proof === undefined) return undefined;
    const now = Date.now();
    this.forgetStale(now);
    if (now - (this.provedAt.get(nodeId) ?? 0) < this.heartbeatMs) return undefined;
    this.provedAt.set(nodeId, now);
    if (!(await this.proof.provenGone(nodeId))) return undefined;
    this.provedAt.delete(nodeId);
    return "connections";
  }

  /** Entries only matter for one heartbeat; a node that came back would otherwise stay here. */
  private forgetStale(now: number): void {
    for (const [nodeId, at] of this.provedAt) {
      if (now - at >= this.heartbeatMs) this.provedAt.delete(nodeId);
    }
  }

  /** How many nodes were asked about within the last heartbeat (for tests). */
  get pendingProofs(): number {
    return this.provedAt.size;
  }
}
