import {
  type RateLimiterAbstract,
  RateLimiterMemory,
  RateLimiterRedis,
} from "rate-limiter-flexible";
import type { RedisClient } from "../cluster/redis-fabric.js";

export interface LockoutSettings {
  /** Consecutive failures from one source address before it is locked out. */
  perIp: number;
  /** Consecutive failures for one username before it is locked out. */
  perUsername: number;
  blockSeconds: number;
}

/**
 * Brute-force protection: consecutive authentication failures per source address and per
 * username lock further attempts out for `blockSeconds`. It is asked before any password is
 * hashed, so a locked-out attacker costs the node no hashing at all. The counters live in a
 * rate-limiter-flexible limiter: in memory on one node, in Redis for a cluster.
 */
export class AuthLockout {
  constructor(
    private readonly settings: LockoutSettings,
    private readonly byIp: RateLimiterAbstract,
    private readonly byUsername: RateLimiterAbstract,
  ) {}

  get blockSeconds(): number {
    return this.settings.blockSeconds;
  }

  static inMemory(settings: LockoutSettings): AuthLockout {
    const limiter = (points: number, keyPrefix: string) =>
      new RateLimiterMemory({ points, duration: settings.blockSeconds, keyPrefix });
    return new AuthLockout(
      settings,
      limiter(settings.perIp, "auth-ip"),
      limiter(settings.perUsername, "auth-user"),
    );
  }

  /**
   * Counters shared by the whole cluster in Redis, so an attacker cannot spread guesses over
   * nodes. If Redis is unreachable, an in-memory insurance limiter on each node keeps the
   * lockout working (per node) until Redis returns.
   */
  static inRedis(settings: LockoutSettings, redis: RedisClient): AuthLockout {
    const limiter = (points: number, keyPrefix: string) =>
      new RateLimiterRedis({
        storeClient: redis,
        points,
        duration: settings.blockSeconds,
        keyPrefix,
        insuranceLimiter: new RateLimiterMemory({
          points,
          duration: settings.blockSeconds,
          keyPrefix,
        }),
      });
    return new AuthLockout(
      settings,
      limiter(settings.perIp, "auth-ip"),
      limiter(settings.perUsername, "auth-user"),
    );
  }

  /** Whether attempts from this address, or for this username, are locked out right now. */
  async isLockedOut(ip: string, username: string | undefined): Promise<boolean> {
    const [ipState, userState] = await Promise.all([
      this.byIp.get(ip),
      username === undefined ? null : this.byUsername.get(username),
    ]);
    return (
      (ipState !== null && ipState.consumedPoints >= this.settings.perIp) ||
      (userState !== null && userState.consumedPoints >= this.settings.perUsername)
    );
  }

  /**
   * Records a failed attempt; at the limit the key is blocked for the full `blockSeconds`.
   * Resolves true when this failure started a lockout (of the address or the username).
   */
  async recordFailure(ip: string, username: string | undefined): Promise<boolean> {
    const locked = await Promise.all([
      this.fail(this.byIp, ip, this.settings.perIp),
      username === undefined
        ? false
        : this.fail(this.byUsername, username, this.settings.perUsername),
    ]);
    return locked.includes(true);
  }

  /** A success ends the run of consecutive failures. */
  async recordSuccess(ip: string, username: string | undefined): Promise<void> {
    await Promise.all([
      this.byIp.delete(ip),
      username === undefined ? undefined : this.byUsername.delete(username),
    ]);
  }

  /** Counts one failure; true when it is the one that reaches the limit and starts the block. */
  private async fail(limiter: RateLimiterAbstract, key: string, points: number): Promise<boolean> {
    // consume() rejects with the limiter state once points run out; either way we read it.
    const state = await limiter.consume(key).catch((rejected: unknown) => rejected);
    const consumed = (state as { consumedPoints?: number } | null)?.consumedPoints ?? 0;
    if (consumed !== points) return false;
    await limiter.block(key, this.settings.blockSeconds);
    return true;
  }
}
