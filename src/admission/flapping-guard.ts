import {
  type RateLimiterAbstract,
  RateLimiterMemory,
  RateLimiterRedis,
} from "rate-limiter-flexible";
import type { RedisClient } from "../redis/redis-client.js";

export interface FlappingSettings {
  maxConnects: number;
  windowSeconds: number;
  banSeconds: number;
}

/** The CONNECT that crossed the limit is "flapping"; later ones during the ban are "banned". */
export type FlappingVerdict = "flapping" | "banned" | undefined;

/**
 * Refuses a client id that connects more than `maxConnects` times within `windowSeconds`, for
 * `banSeconds`, as EMQX's flapping detection does: a device stuck in a connect loop (or a
 * script reusing its id) otherwise costs every node an authentication, a session claim and a
 * takeover per loop. Counted per client id in a rate-limiter-flexible limiter: in memory on one
 * node, in Redis for a cluster (with an in-memory insurance limiter while Redis is down).
 */
export class FlappingGuard {
  private constructor(
    private readonly settings: FlappingSettings,
    private readonly limiter: RateLimiterAbstract,
  ) {}

  static inMemory(settings: FlappingSettings): FlappingGuard {
    return new FlappingGuard(settings, new RateLimiterMemory(options(settings)));
  }

  static inRedis(settings: FlappingSettings, redis: RedisClient): FlappingGuard {
    return new FlappingGuard(
      settings,
      new RateLimiterRedis({
        storeClient: redis,
        ...options(settings),
        insuranceLimiter: new RateLimiterMemory(options(settings)),
      }),
    );
  }

  /** Counts a CONNECT of `clientId`, and says whether it must be refused. One round trip. */
  async check(clientId: string): Promise<FlappingVerdict> {
    const state = await this.limiter.consume(clientId).then(
      () => undefined,
      (rejected: unknown) => {
        if (rejected instanceof Error) throw rejected;
        return rejected as { consumedPoints: number };
      },
    );
    if (state === undefined) return undefined;
    return state.consumedPoints === this.settings.maxConnects + 1 ? "flapping" : "banned";
  }
}

function options(settings: FlappingSettings) {
  return {
    points: settings.maxConnects,
    duration: settings.windowSeconds,
    blockDuration: settings.banSeconds,
    keyPrefix: "flapping",
  };
}
