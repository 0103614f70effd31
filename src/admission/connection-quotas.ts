/** Why a socket was refused before any MQTT work; becomes a metric label. */
export type SocketRejection = "rate" | "per_ip" | "per_node" | "cluster";

export interface ConnectionQuotaSettings {
  perNode: number;
  perIp?: number | undefined;
  ratePerIp?: number | undefined;
  cluster?: number | undefined;
}

/**
 * The quotas checked when a socket is accepted, before a byte of MQTT (or of a TLS handshake)
 * is read, so the check costs a map lookup (a refusal is then closed, or answered within the
 * bounds of RefusalAnswers): new connections per second
 * and open connections per client address, open connections on this node, and open connections
 * across the cluster (from the per-node counts in Redis, refreshed every second: see
 * ClusterConnectionCounts). Synchronous, so a listener can ask on the raw socket's 'connection'
 * event, before TLS takes the socket over.
 */
export class ConnectionQuotas {
  private readonly openPerIp = new Map<string, number>();
  private open = 0;
  /** New connections per address in the current one-second window. */
  private readonly newPerIp = new Map<string, number>();
  private windowStart = 0;

  constructor(
    private readonly settings: ConnectionQuotaSettings,
    /** Open connections on the other live nodes, as last read from Redis (0 alone). */
    private readonly otherNodesOpen: () => number = () => 0,
    private readonly now: () => number = Date.now,
  ) {}

  /** Connections open on this node (admitted and not yet released). */
  get openConnections(): number {
    return this.open;
  }

  /**
   * Admits a socket from `ip` or says why not. An admitted socket must be released exactly
   * once, when it closes; a refused one counts nowhere (except against the address' rate).
   */
  admit(ip: string): SocketRejection | undefined {
    const { perNode, perIp, ratePerIp, cluster } = this.settings;
    if (ratePerIp !== undefined && !this.withinRate(ip, ratePerIp)) return "rate";
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

  /**
   * Counts a new connection from `ip` against `limit` per second: a fixed one-second window
   * shared by all addresses, whose map is dropped whole when the window ends, so a flood from
   * many addresses holds at most one second's worth of them (no timers, no per-key expiry).
   * Every attempt counts, refused ones too: an address that keeps hammering stays refused.
   */
  private withinRate(ip: string, limit: number): boolean {
    const now = this.now();
    if (now - this.windowStart >= 1_000) {
      this.windowStart = now;
      this.newPerIp.clear();
    }
    const attempts = (this.newPerIp.get(ip) ?? 0) + 1;
    this.newPerIp.set(ip, attempts);
    return attempts <= limit;
  }
}
