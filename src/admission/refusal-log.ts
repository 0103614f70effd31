import type { ListenerType } from "../config/schema.js";
import type { Logger } from "../observability/logger.js";
import type { SocketRejection } from "./connection-quotas.js";

/**
 * The debug line of socket-quota refusals, sampled: at most one per interval, with how many
 * refusals went unlogged since the last one, so a connect flood cannot flood the log. A client
 * that reconnects in a loop dominates the refusals, and so the sampled lines. The address and
 * the quota only; never anything the client sent.
 */
export class SampledRefusalLog {
  private lastAt = Number.NEGATIVE_INFINITY;
  private unlogged = 0;

  constructor(
    private readonly log: Logger,
    private readonly intervalMs = 1_000,
    private readonly now: () => number = Date.now,
  ) {}

  refused(reason: SocketRejection, remoteAddress: string, listener: ListenerType): void {
    if (!this.log.isLevelEnabled("debug")) return;
    const now = this.now();
    if (now - this.lastAt < this.intervalMs) {
      this.unlogged++;
      return;
    }
    this.log.debug(
      { event: "connection.rejected", reason, remoteAddress, listener, unlogged: this.unlogged },
      "connection refused by a socket quota",
    );
    this.lastAt = now;
    this.unlogged = 0;
  }
}
