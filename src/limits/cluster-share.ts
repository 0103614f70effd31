import { type RateLimiterAbstract, RateLimiterRes } from "rate-limiter-flexible";

/** `check` answer: a reservation is on its way; wait for `ready()` and ask again. */
export const PENDING = -1;

/** A reservation unanswered this long is taken from the fallback (in-memory) limiter instead. */
const RESERVE_TIMEOUT_MS = 500;

/**
 * This node's share of one identity's cluster-wide budget in one unit (messages or bytes),
 * reserved from a shared fixed-window counter (RateLimiterRedis) in chunks, so that Redis is
 * asked about once per chunk rather than once per message:
 * - `check` is synchronous while the reserved points cover the cost;
 * - `spend` asks for the next chunk in the background once half a chunk is left, so a client
 *   publishing steadily never waits for Redis;
 * - only an empty share waits (PENDING) for a round trip.
 *
 * Each point is counted once cluster-wide, when reserved; points reserved but unspent when the
 * identity leaves this node are lost (at most a chunk: a tenth of a window). A chunk asked for
 * when the window has fewer points left gets what is left (the counter says how far over it
 * went), and the share then knows the window is exhausted until it resets: it does not ask
 * again before.
 */
export class ClusterShare {
  private available = 0;
  private reserving: Promise<void> | undefined;
  private exhaustedUntil = 0;

  constructor(
    private readonly limiter: RateLimiterAbstract,
    private readonly key: string,
    private readonly chunk: number,
    private readonly clock: () => number,
    private readonly options: {
      /** Used when the limiter does not answer in time (a hung, not a down, Redis). */
      fallback?: RateLimiterAbstract;
      /** An unexpected failure: the chunk is granted (the local limit still holds). */
      onError(error: unknown): void;
      timeoutMs?: number;
    },
  ) {}

  /**
   * 0 when `cost` is covered now; PENDING when points are being reserved (await `ready()`);
   * otherwise the milliseconds until the cluster-wide window resets.
   */
  check(cost: number, now: number): number {
    // A cost above a whole window (one huge message) needs a full window's worth, then debt.
    const need = Math.min(cost, this.limiter.points);
    if (this.available >= need) return 0;
    if (now < this.exhaustedUntil) return this.exhaustedUntil - now;
    this.reserve(need - this.available);
    return PENDING;
  }

  /** Spends `cost` after `check` said 0; reserves the next chunk ahead of need. */
  spend(cost: number, now: number): void {
    this.available -= cost;
    if (
      this.available < this.chunk / 2 &&
      this.reserving === undefined &&
      now >= this.exhaustedUntil
    ) {
      this.reserve(0);
    }
  }

  /** Settles when no reservation is in flight. */
  ready(): Promise<void> {
    return this.reserving ?? Promise.resolve();
  }

  private reserve(shortfall: number): void {
    if (this.reserving !== undefined) return;
    const ask = Math.min(this.limiter.points, Math.max(this.chunk, Math.ceil(shortfall)));
    this.reserving = this.consume(ask).then(
      (outcome) => {
        this.available += outcome.granted;
        if (outcome.exhaustedForMs > 0) this.exhaustedUntil = this.clock() + outcome.exhaustedForMs;
        this.reserving = undefined;
      },
      (error: unknown) => {
        // Not a refusal: the store and its insurance both failed. Fail open for one chunk;
        // the node's own token bucket still enforces the limit on this node.
        this.options.onError(error);
        this.available += ask;
        this.reserving = undefined;
      },
    );
  }

  private consume(ask: number): Promise<{ granted: number; exhaustedForMs: number }> {
    const fromLimiter = (limiter: RateLimiterAbstract) =>
      limiter.consume(this.key, ask).then(
        () => ({ granted: ask, exhaustedForMs: 0 }),
        (rejection: unknown) => {
          if (!(rejection instanceof RateLimiterRes)) throw rejection;
          // The counter went `over` past the window's points with this ask: the rest was ours.
          const over = rejection.consumedPoints - this.limiter.points;
          return {
            granted: Math.max(0, Math.min(ask, ask - over)),
            exhaustedForMs: Math.max(1, rejection.msBeforeNext),
          };
        },
      );
    const { fallback } = this.options;
    if (!fallback) return fromLimiter(this.limiter);
    return new Promise((resolve, reject) => {
      let settled = false;
      const timer = setTimeout(() => {
        settled = true;
        fromLimiter(fallback).then(resolve, reject);
      }, this.options.timeoutMs ?? RESERVE_TIMEOUT_MS);
      fromLimiter(this.limiter).then(
        (outcome) => {
          if (settled) return;
          clearTimeout(timer);
          resolve(outcome);
        },
        (error: unknown) => {
          if (settled) return;
          clearTimeout(timer);
          reject(error);
        },
      );
    });
  }
}
