/** Below this, a shortfall of tokens is floating-point noise, not a reason to wait. */
const EPSILON = 1e-9;

/**
 * A token bucket on a caller-supplied clock (milliseconds, e.g. performance.now()), so that it is
 * pure arithmetic: no timers, no promises, cheap enough to run for every PUBLISH.
 *
 * - It starts full (`capacity` tokens) and refills at `ratePerSecond`, never above `capacity`.
 * - A cost needs min(cost, capacity) tokens to be taken: a single cost larger than the whole
 *   bucket (one big message against a small byte burst) would otherwise never pass. It passes
 *   once the bucket is full and leaves it in debt, which later costs wait out: the long-run
 *   rate is exact either way.
 * - `waitFor` says how long until a cost can be taken; `take` takes it. Callers ask first and
 *   take only when every limit they check agrees, so a refused cost consumes nothing.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    readonly ratePerSecond: number,
    readonly capacity: number,
    now: number,
  ) {
    if (!(ratePerSecond > 0)) throw new RangeError("ratePerSecond must be positive");
    if (!(capacity >= 1)) throw new RangeError("capacity must be at least 1");
    this.tokens = capacity;
    this.last = now;
  }

  /** Milliseconds until `cost` can be taken; 0 means now. */
  waitFor(cost: number, now: number): number {
    this.refill(now);
    const shortfall = Math.min(cost, this.capacity) - this.tokens;
    if (shortfall <= EPSILON) return 0;
    return Math.max(0, this.last - now) + (shortfall * 1000) / this.ratePerSecond;
  }

  /** Takes `cost` (after waitFor said 0 for the same `now`); may leave the bucket in debt. */
  take(cost: number): void {
    this.tokens -= cost;
  }

  /**
   * No tokens accrue before `until`, and none already banked remain: used while a limit outside
   * this bucket (the cluster-wide budget) refuses, so that the bucket does not fill up meanwhile
   * and release a burst the moment that limit lifts.
   */
  suspendUntil(until: number): void {
    this.tokens = Math.min(this.tokens, 0);
    this.last = Math.max(this.last, until);
  }

  /** Milliseconds until the bucket is full again if nothing is taken; 0 if it is full. */
  msUntilFull(now: number): number {
    this.refill(now);
    const missing = this.capacity - this.tokens;
    if (missing <= EPSILON) return 0;
    return Math.max(0, this.last - now) + (missing * 1000) / this.ratePerSecond;
  }

  /** Tokens available at `now` (negative while in debt). */
  level(now: number): number {
    this.refill(now);
    return this.tokens;
  }

  private refill(now: number): void {
    if (now <= this.last) return;
    this.tokens = Math.min(
      this.capacity,
      this.tokens + ((now - this.last) * this.ratePerSecond) / 1000,
    );
    this.last = now;
  }
}
