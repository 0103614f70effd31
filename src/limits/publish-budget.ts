import { type ClusterShare, PENDING } from "./cluster-share.js";
import { TokenBucket } from "./token-bucket.js";

export { PENDING } from "./cluster-share.js";

/** The configured limit a refusal came from (the audit line's `limit`). */
export type PublishLimitName = "messagesPerSecond" | "bytesPerSecond";

export interface BudgetParts {
  messages?: { ratePerSecond: number; burst: number; cluster?: ClusterShare };
  bytes?: { ratePerSecond: number; burst: number; cluster?: ClusterShare };
}

/**
 * What one identity may still publish through this node: a token bucket per unit (messages,
 * bytes) that paces it smoothly, and, in a cluster, this node's reserved share of the identity's
 * cluster-wide budget in each unit (ClusterShare). A PUBLISH passes when every part agrees; a
 * refusal consumes nothing.
 *
 * `take` is the per-PUBLISH path: arithmetic only while the cluster shares hold points, which is
 * all but about once per chunk (a tenth of a cluster window).
 */
export class PublishBudget {
  /** Connections of this identity on this node using the budget. */
  connections = 0;
  /** Which limit refused last, for the audit line. */
  refusedBy: PublishLimitName = "messagesPerSecond";
  private readonly messages: TokenBucket | undefined;
  private readonly bytes: TokenBucket | undefined;
  private readonly clusterMessages: ClusterShare | undefined;
  private readonly clusterBytes: ClusterShare | undefined;

  constructor(parts: BudgetParts, now: number) {
    this.messages = parts.messages
      ? new TokenBucket(parts.messages.ratePerSecond, parts.messages.burst, now)
      : undefined;
    this.bytes = parts.bytes
      ? new TokenBucket(parts.bytes.ratePerSecond, parts.bytes.burst, now)
      : undefined;
    this.clusterMessages = parts.messages?.cluster;
    this.clusterBytes = parts.bytes?.cluster;
  }

  /**
   * Takes one PUBLISH of `bytes`: 0 when it may go now, PENDING while cluster points are being
   * reserved (await `ready()`, then ask again), otherwise the milliseconds to wait.
   */
  take(bytes: number, now: number): number {
    let wait = 0;
    if (this.messages) {
      const w = this.messages.waitFor(1, now);
      if (w > wait) {
        wait = w;
        this.refusedBy = "messagesPerSecond";
      }
    }
    if (this.bytes) {
      const w = this.bytes.waitFor(bytes, now);
      if (w > wait) {
        wait = w;
        this.refusedBy = "bytesPerSecond";
      }
    }
    if (wait > 0) return wait;

    let pending = false;
    if (this.clusterMessages) {
      const c = this.clusterMessages.check(1, now);
      if (c === PENDING) pending = true;
      else if (c > wait) {
        wait = c;
        this.refusedBy = "messagesPerSecond";
      }
    }
    if (this.clusterBytes) {
      const c = this.clusterBytes.check(bytes, now);
      if (c === PENDING) pending = true;
      else if (c > wait) {
        wait = c;
        this.refusedBy = "bytesPerSecond";
      }
    }
    if (wait > 0) {
      // The cluster-wide budget is spent (by this node or others) until its window resets. The
      // local buckets bank nothing meanwhile: otherwise every node would release a full burst
      // the moment the window resets and spend it at once, and the identity would publish in
      // bursts, one per window, instead of at its rate.
      this.messages?.suspendUntil(now + wait);
      this.bytes?.suspendUntil(now + wait);
      return wait;
    }
    if (pending) return PENDING;

    this.messages?.take(1);
    this.bytes?.take(bytes);
    this.clusterMessages?.spend(1, now);
    this.clusterBytes?.spend(bytes, now);
    return 0;
  }

  /** Settles once no cluster reservation is in flight. */
  ready(): Promise<unknown> {
    if (this.clusterMessages && this.clusterBytes)
      return Promise.all([this.clusterMessages.ready(), this.clusterBytes.ready()]);
    return (this.clusterMessages ?? this.clusterBytes)?.ready() ?? Promise.resolve();
  }

  /** Milliseconds until both buckets are full again: after that, forgetting them changes nothing. */
  msUntilFull(now: number): number {
    return Math.max(this.messages?.msUntilFull(now) ?? 0, this.bytes?.msUntilFull(now) ?? 0);
  }
}
