import { performance } from "node:perf_hooks";
import {
  type RateLimiterAbstract,
  RateLimiterMemory,
  RateLimiterRedis,
} from "rate-limiter-flexible";
import type { PublishLimitsConfig, PublishRates } from "../config/publish-limits-schema.js";
import { installReadGate, type PublishAdmission, type ReadGate } from "../engine/read-gate.js";
import type { Logger } from "../observability/logger.js";
import type { RedisClient } from "../redis/redis-client.js";
import type { AuditLog, AuditSubject } from "../security/audit-log.js";
import { ClusterShare } from "./cluster-share.js";
import { type BudgetParts, PENDING, PublishBudget } from "./publish-budget.js";
import { budgetKey, type PublisherIdentity, PublishProfiles } from "./publish-profiles.js";

/**
 * A throttle episode ends once the client has gone this long without being paused. A client
 * over its limit is paused again within one token's time of every resume, so any gap this long
 * means it is back under its limit.
 */
const QUIET_MS = 1_000;
/**
 * Shortest pause. Waiting for exactly one token would take one timer per message at the limit
 * (10,000 a second for a fast client); this lets a handful of tokens gather per wake-up instead.
 * The rate is unchanged: the bucket keeps count.
 */
const MIN_PAUSE_MS = 10;
/** Cluster points are reserved in chunks of this fraction of a window: ~10 Redis calls a window. */
const CHUNKS_PER_WINDOW = 10;

/** What the limiter needs from the rest of the node about one connection. */
export interface LimitedConnection {
  /** Who is publishing; undefined until authentication has finished. */
  identity(): PublisherIdentity | undefined;
  /** Who the audit lines are about. */
  subject(): AuditSubject;
  /** Closes the connection for abuse. */
  disconnect(): void;
}

export interface PublishLimiterDeps {
  metrics: { markPublishThrottled(): void };
  audit: Pick<AuditLog, "throttled" | "unthrottled" | "abuse">;
  log: Logger;
  /** Sluice's Redis connection for shared state; absent on a single node (limits per node). */
  redis?: RedisClient;
  /** Milliseconds, monotonic; tests may pass their own. */
  clock?: () => number;
}

interface SharedBudget {
  budget: PublishBudget;
  /** Pending forget timer once the last connection of the identity has gone. */
  expiry?: NodeJS.Timeout;
}

/**
 * Per-identity publish limits (`limits.publish`): messages and bytes per second with bursts,
 * cluster-wide over Redis when the node has one. Over a limit the client is throttled, not
 * refused: Sluice stops reading its socket until its budget allows the next PUBLISH (see
 * ReadGate), so TCP slows the sender and no accepted message is dropped. A client throttled
 * without a break for `disconnectAfterSeconds` is disconnected, its will published (the server
 * closing a misbehaving connection, as for a protocol error, [MQTT-3.1.2-8]).
 *
 * Cluster-wide: each identity's budget is a fixed-window counter in Redis (RateLimiterRedis) of
 * `rate x window` points per window of `ceil(burst / rate)` seconds (at least 1), from which
 * each node reserves chunks (ClusterShare); a token bucket per identity on each node paces
 * what the node has reserved. If Redis is down, or does not answer within 500 ms, an in-memory
 * insurance limiter with the same window takes over on each node, so limits then hold per node.
 */
export class PublishLimiter {
  private readonly profiles: PublishProfiles;
  private readonly budgets = new Map<string, SharedBudget>();
  private readonly counters = new Map<
    string,
    { limiter: RateLimiterAbstract; fallback?: RateLimiterAbstract }
  >();
  private readonly clock: () => number;
  private reportedClusterError = false;

  constructor(
    config: PublishLimitsConfig,
    private readonly deps: PublishLimiterDeps,
  ) {
    this.profiles = new PublishProfiles(config);
    this.clock = deps.clock ?? (() => performance.now());
  }

  /** Applies the limits to one aedes client (call before it reads its first packet). */
  attach(client: object, connection: LimitedConnection): () => void {
    const throttle = new ConnectionThrottle(this, connection, this.deps, this.clock);
    throttle.gate = installReadGate(client, throttle);
    return () => throttle.closed();
  }

  /** The budget an identity's connections share on this node; `release` when done with it. */
  acquire(identity: PublisherIdentity): {
    budget: PublishBudget;
    disconnectAfterMs: number;
    release(): void;
  } {
    const profile = this.profiles.for(identity);
    const identityKey = budgetKey(identity);
    // Connections of one identity under different overrides (matched by client id) keep
    // apart, each with its own limits.
    const key = `${profile.key}\n${identityKey}`;
    let shared = this.budgets.get(key);
    if (!shared) {
      shared = { budget: new PublishBudget(this.parts(profile.rates, identityKey), this.clock()) };
      this.budgets.set(key, shared);
    }
    const entry = shared;
    if (entry.expiry) {
      clearTimeout(entry.expiry);
      delete entry.expiry;
    }
    entry.budget.connections++;
    let released = false;
    return {
      budget: entry.budget,
      disconnectAfterMs: profile.rates.disconnectAfterSeconds * 1000,
      release: () => {
        if (released) return;
        released = true;
        if (--entry.budget.connections > 0) return;
        // Kept until its buckets are full again, so that reconnecting restores no burst early.
        const forget = (): void => {
          if (entry.budget.connections === 0 && this.budgets.get(key) === entry)
            this.budgets.delete(key);
        };
        const ms = entry.budget.msUntilFull(this.clock());
        if (ms <= 0) forget();
        else {
          entry.expiry = setTimeout(forget, ms);
          entry.expiry.unref();
        }
      },
    };
  }

  private parts(rates: PublishRates, identityKey: string): BudgetParts {
    const part = (unit: "messages" | "bytes", ratePerSecond: number, burst: number) => ({
      ratePerSecond,
      burst,
      ...(this.deps.redis ? { cluster: this.share(unit, ratePerSecond, burst, identityKey) } : {}),
    });
    const parts: BudgetParts = {};
    if (rates.messagesPerSecond !== undefined)
      parts.messages = part(
        "messages",
        rates.messagesPerSecond,
        rates.burstMessages ?? rates.messagesPerSecond,
      );
    if (rates.bytesPerSecond !== undefined)
      parts.bytes = part("bytes", rates.bytesPerSecond, rates.burstBytes ?? rates.bytesPerSecond);
    return parts;
  }

  private share(
    unit: "messages" | "bytes",
    ratePerSecond: number,
    burst: number,
    identityKey: string,
  ): ClusterShare {
    const redis = this.deps.redis;
    if (!redis) throw new Error("no Redis for cluster-wide limits");
    // A window long enough to hold the burst, so that a quiet client's burst is allowed
    // cluster-wide too; its points are the rate over the window, so the long-run rate holds.
    const duration = Math.max(1, Math.ceil(burst / ratePerSecond));
    const points = ratePerSecond * duration;
    const id = `${unit}:${points}:${duration}`;
    let counter = this.counters.get(id);
    if (!counter) {
      const keyPrefix = `publish-${unit}`;
      const fallback = new RateLimiterMemory({ points, duration, keyPrefix });
      counter = {
        limiter: new RateLimiterRedis({
          storeClient: redis,
          points,
          duration,
          keyPrefix,
          insuranceLimiter: fallback,
          // Straight to the insurance limiter while Redis is away, instead of queueing.
          rejectIfRedisNotReady: true,
        }),
        fallback,
      };
      this.counters.set(id, counter);
    }
    return new ClusterShare(
      counter.limiter,
      identityKey,
      Math.max(1, Math.ceil(points / CHUNKS_PER_WINDOW)),
      this.clock,
      {
        ...(counter.fallback ? { fallback: counter.fallback } : {}),
        onError: (error) => this.clusterError(error),
      },
    );
  }

  private clusterError(error: unknown): void {
    if (this.reportedClusterError) return;
    this.reportedClusterError = true;
    this.deps.log.error(
      { event: "limits.cluster_failed", err: error },
      "cluster-wide publish limits failed; limits hold per node (reported once)",
    );
  }
}

/**
 * One connection's side of the limits: asks its identity's budget for each PUBLISH, pauses and
 * resumes the read gate, and tracks throttle episodes for the metric, the audit log and the
 * abuse disconnect.
 */
class ConnectionThrottle implements PublishAdmission {
  gate: ReadGate | undefined;
  private lease: ReturnType<PublishLimiter["acquire"]> | undefined;
  private isClosed = false;
  private paused = false;
  private episodeStartedAt: number | undefined;
  private lastResumedAt = 0;
  private resumeTimer: NodeJS.Timeout | undefined;
  private quietTimer: NodeJS.Timeout | undefined;
  private abuseTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly limiter: PublishLimiter,
    private readonly connection: LimitedConnection,
    private readonly deps: PublishLimiterDeps,
    private readonly clock: () => number,
  ) {}

  admit(bytes: number): boolean {
    const lease = this.lease ?? this.bind();
    // Before authentication has finished the identity is unknown: aedes queues at most its
    // queueLimit (42) packets until then, so that much goes unmetered, once per connection.
    if (lease === undefined) return true;
    const now = this.clock();
    const verdict = lease.budget.take(bytes, now);
    if (verdict === 0) return true;
    if (verdict === PENDING) {
      // Waiting for a cluster reservation (one Redis round trip) is no throttling.
      lease.budget.ready().then(this.wake, this.wake);
      return false;
    }
    this.pause(verdict, lease.budget.refusedBy, now);
    return false;
  }

  closed(): void {
    this.isClosed = true;
    clearTimeout(this.resumeTimer);
    clearTimeout(this.quietTimer);
    clearTimeout(this.abuseTimer);
    this.lease?.release();
  }

  private bind(): typeof this.lease {
    if (this.isClosed) return undefined;
    const identity = this.connection.identity();
    if (identity === undefined) return undefined;
    this.lease = this.limiter.acquire(identity);
    return this.lease;
  }

  private readonly wake = (): void => {
    if (!this.isClosed) this.gate?.resume();
  };

  private pause(ms: number, limit: string, now: number): void {
    this.paused = true;
    if (this.episodeStartedAt === undefined) {
      this.episodeStartedAt = now;
      this.deps.metrics.markPublishThrottled();
      this.deps.audit.throttled(this.connection.subject(), limit);
      this.abuseTimer = setTimeout(this.abuse, this.lease?.disconnectAfterMs ?? 0);
    }
    this.resumeTimer = setTimeout(this.resume, Math.max(MIN_PAUSE_MS, Math.ceil(ms)));
  }

  private readonly resume = (): void => {
    this.resumeTimer = undefined;
    this.paused = false;
    if (this.isClosed) return;
    this.lastResumedAt = this.clock();
    this.quietTimer ??= setTimeout(this.checkQuiet, QUIET_MS);
    this.gate?.resume();
  };

  /** Ends the episode once the client has gone QUIET_MS without a pause. */
  private readonly checkQuiet = (): void => {
    this.quietTimer = undefined;
    // Still paused: the next resume checks again.
    if (this.isClosed || this.paused || this.episodeStartedAt === undefined) return;
    const quietFor = this.clock() - this.lastResumedAt;
    if (quietFor < QUIET_MS) {
      this.quietTimer = setTimeout(this.checkQuiet, QUIET_MS - quietFor);
      return;
    }
    this.episodeStartedAt = undefined;
    clearTimeout(this.abuseTimer);
    this.abuseTimer = undefined;
    this.deps.audit.unthrottled(this.connection.subject());
  };

  private readonly abuse = (): void => {
    this.abuseTimer = undefined;
    if (this.isClosed || this.episodeStartedAt === undefined) return;
    const subject = this.connection.subject();
    this.deps.audit.abuse(subject, "publish_flood");
    this.deps.log.info(
      {
        event: "limits.publish_flood",
        clientId: subject.clientId,
        throttledMs: Math.round(this.clock() - this.episodeStartedAt),
      },
      "client disconnected: over its publish limits without a break",
    );
    this.connection.disconnect();
  };
}
