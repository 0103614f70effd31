import { RateLimiterMemory } from "rate-limiter-flexible";

/** Why a socket was refused before any MQTT work; becomes a metric label. */
export type SocketRejection = "rate" | "per_ip" | "per_node" | "cluster";

export interface ConnectionQuotaSettings {
  perNode: number;
  perIp?: number | undefined;
  ratePerIp?: number | undefined;
  cluster?: number | undefined;
}

/**
 * The quotas checked when a socket is accepted, before a byte of MQTT is read, so a refused
 * connection costs a map lookup and a close: new connections per second and open connections
 * per client address, open connections on this node, and open connections across the cluster
 * (from the per-node counts in Redis, refreshed every second: see ClusterConnectionCounts).
 */
export class ConnectionQuotas {
  private readonly openPerIp = new Map<string, number>();
  private open = 0;
  private readonly rate: RateLimiterMemory | undefined;

  constructor(
    private readonly settings: ConnectionQuotaSettings,
    /** Open connections on the other live nodes, as last read from Redis (0 alone). */
    private readonly otherNodesOpen: () => number = () => 0,
  ) {
    this.rate =
      settings.ratePerIp === undefined
        ? undefined
        : new RateLimiterMemory({ points: settings.ratePerIp, duration: 1 });
  }

  /** Connections open on this node (admitted and not yet released). */
  get openConnections(): number {
    return this.open;
  }

  /**
   * Admits a socket from `ip` or says why not. An admitted socket must be released exactly
   * once, when it closes.
   */
  async admit(ip: string): Promise<SocketRejection | undefined> {
    if (this.rate && !(await this.rate.consume(ip).then(admitted, refused))) return "rate";
    // Checked and counted together after the await, so concurrent sockets cannot overshoot.
    const { perNode, perIp, cluster } = this.settings;
    if (this.open >= perNode) return "per_node";
    if (cluster !== undefined && this.open + this.otherNodesOpen() >= cluster) return "cluster";
    const fromIp = this.openPerIp.get(ip) ?? 0;
    if (perIp !== undefined && fromIp >= perIp) return "per_ip";
    this.open++;
    this.openPerIp.set(ip, fromIp + 1);
    return undefined;
  }

  release(ip: string): void {
    this.open--;
    const fromIp = (this.openPerIp.get(ip) ?? 1) - 1;
    if (fromIp <= 0) this.openPerIp.delete(ip);
    else this.openPerIp.set(ip, fromIp);
  }
}

const admitted = (): boolean => true;
/** consume() rejects with the limiter's state when points ran out, or with an Error. */
const refused = (reason: unknown): boolean => {
  if (reason instanceof Error) throw reason;
  return false;
};
