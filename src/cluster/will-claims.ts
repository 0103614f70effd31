import type { RedisClient } from "../redis/redis-client.js";
import { STATE_KEYS } from "../redis/redis-keys.js";

/** Long enough for one node to publish and delete the will, short enough to retry after a crash. */
const CLAIM_TTL_MS = 30_000;

/**
 * When a node dies, every survivor finds its clients' wills in Redis and aedes would have each
 * of them publish every will. A claim in Redis (SET NX with a TTL) lets exactly one survivor
 * publish each will; if that survivor dies before deleting the will, the claim expires and
 * another one publishes it.
 */
export class WillClaims {
  constructor(private readonly redis: RedisClient) {}

  async claim(brokerId: string, clientId: string): Promise<boolean> {
    const key = STATE_KEYS.willClaim(brokerId, clientId);
    return (await this.redis.set(key, "1", "PX", CLAIM_TTL_MS, "NX")) === "OK";
  }
}
