import {
  type RateLimiterAbstract,
  RateLimiterMemory,
  RateLimiterRedis,
} from "rate-limiter-flexible";
import { CONNECT_LINGER_MS, TurnBatches, type Waiting } from "../engine/turn-batches.js";
import type { RedisClient } from "../redis/redis-client.js";

export interface LockoutSettings {
  /** Consecutive failures from one source address before that address is locked out. */
  perIp: number;
  /** Consecutive failures for one username from one address before that pair is locked out. */
  perUsername: number;
  blockSeconds: number;
  acrossSources: {
    /** Failures for one username over every address that mark it as targeted. */
    alertAfter: number;
    /** Lock a targeted username out for every address (opt-in: a lever for attackers). */
    block: boolean;
  };
}

/** What one failed attempt started; each is audited once, by the failure that caused it. */
export interface FailureOutcome {
  /** The source address reached its limit. */
  addressLocked: boolean;
  /** The username reached its limit from this address. */
  usernameLockedAtAddress: boolean;
  /** The username's failures over every address reached `acrossSources.alertAfter`. */
  usernameTargeted: boolean;
}

type LimiterFactory = (points: number, keyPrefix: string) => RateLimiterAbstract;

/**
 * Brute-force protection keyed so that it cannot be turned against a device: failures lock out
 * a source address, or a username from one address, but a username is never locked for every
 * address unless `acrossSources.block` asks for it. Guessing spread over many addresses is
 * still counted per username and reported once it passes `acrossSources.alertAfter`.
 *
 * It is asked before any password is hashed, so a locked-out attacker costs no hashing. The
 * counters live in rate-limiter-flexible limiters: in memory on one node, in Redis for a
 * cluster.
 */
export class AuthLockout {
  private readonly byIp: RateLimiterAbstract;
  private readonly byUsernameAtIp: RateLimiterAbstract;
  private readonly byUsername: RateLimiterAbstract;
  /**
   * Over Redis, the counters every CONNECT of one turn asks for, read in one MGET (a limiter's
   * own get is a MULTI of GET and PTTL per counter).
   */
  private readonly reads: TurnBatches<string, string | null> | undefined;

  private constructor(
    private readonly settings: LockoutSettings,
    limiter: LimiterFactory,
    redis?: RedisClient,
  ) {
    this.byIp = limiter(settings.perIp, "auth-ip");
    this.byUsernameAtIp = limiter(settings.perUsername, "auth-user-ip");
    this.byUsername = limiter(settings.acrossSources.alertAfter, "auth-user");
    this.reads =
      redis === undefined
        ? undefined
        : new TurnBatches((call) => readCounters(redis, call), {
            paced: true,
            lingerMs: CONNECT_LINGER_MS,
          });
  }

  get blockSeconds(): number {
    return this.settings.blockSeconds;
  }

  /** Whether a targeted username is locked out for every address (`acrossSources.block`). */
  get usernameBlockedEverywhere(): boolean {
    return this.settings.acrossSources.block;
  }

  static inMemory(settings: LockoutSettings): AuthLockout {
    return new AuthLockout(
      settings,
      (points, keyPrefix) =>
        new RateLimiterMemory({ points, duration: settings.blockSeconds, keyPrefix }),
    );
  }

  /**
   * Counters shared by the whole cluster in Redis, so an attacker cannot spread guesses over
   * nodes. If Redis is unreachable, an in-memory insurance limiter on each node keeps the
   * lockout working (per node) until Redis returns.
   */
  static inRedis(settings: LockoutSettings, redis: RedisClient): AuthLockout {
    return new AuthLockout(
      settings,
      (points, keyPrefix) =>
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
        }),
      redis,
    );
  }

  /** Whether attempts from this address, or for this username from it, are locked out now. */
  async isLockedOut(ip: string, username: string | undefined): Promise<boolean> {
    const { perIp, perUsername, acrossSources } = this.settings;
    const [ipPoints, pairPoints, userPoints] = await Promise.all([
      this.consumed(this.byIp, ip),
      username === undefined ? 0 : this.consumed(this.byUsernameAtIp, pairKey(username, ip)),
      username === undefined || !acrossSources.block ? 0 : this.consumed(this.byUsername, username),
    ]);
    return ipPoints >= perIp || pairPoints >= perUsername || userPoints >= acrossSources.alertAfter;
  }

  /** Records a failed attempt; a key that reaches its limit is blocked for `blockSeconds`. */
  async recordFailure(ip: string, username: string | undefined): Promise<FailureOutcome> {
    const { perIp, perUsername, acrossSources } = this.settings;
    const [addressLocked, usernameLockedAtAddress, usernameTargeted] = await Promise.all([
      this.fail(this.byIp, ip, perIp),
      username === undefined
        ? false
        : this.fail(this.byUsernameAtIp, pairKey(username, ip), perUsername),
      username === undefined
        ? false
        : this.fail(this.byUsername, username, acrossSources.alertAfter),
    ]);
    return { addressLocked, usernameLockedAtAddress, usernameTargeted };
  }

  /**
   * A success ends the run of consecutive failures from its address. The username's count over
   * every address stays: one device logging in says nothing about guesses made elsewhere.
   */
  async recordSuccess(ip: string, username: string | undefined): Promise<void> {
    await Promise.all([
      this.byIp.delete(ip),
      username === undefined ? undefined : this.byUsernameAtIp.delete(pairKey(username, ip)),
    ]);
  }

  /**
   * The points a key has consumed (failures counted, or more once blocked). Over Redis the
   * counter is read in its turn's MGET; if that fails, the limiter's own get answers (from its
   * in-memory insurance limiter while Redis is down).
   */
  private async consumed(limiter: RateLimiterAbstract, key: string): Promise<number> {
    if (this.reads !== undefined) {
      try {
        const value = await this.reads.add("", limiter.getKey(key));
        return value === null ? 0 : Number.parseInt(value, 10);
      } catch {
        // fall through to the limiter
      }
    }
    return (await limiter.get(key))?.consumedPoints ?? 0;
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

/** The rate limiters' counters (their keys as `getKey` names them), in one MGET. */
function readCounters(
  redis: RedisClient,
  call: Array<Waiting<string, string | null>>,
): Promise<void> {
  return redis.mget(call.map(({ item }) => item)).then(
    (values) => {
      call.forEach((waiting, i) => {
        waiting.resolve(values[i] ?? null);
      });
    },
    (error: unknown) => {
      for (const waiting of call) waiting.reject(error);
    },
  );
}

/** An address holds no space, so the address first keeps any username unambiguous. */
function pairKey(username: string, ip: string): string {
  return `${ip} ${username}`;
}
