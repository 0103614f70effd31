import { RedisScripts } from "../engine/redis-scripts.js";
import type { RedisClient } from "../redis/redis-client.js";
import { STATE_KEYS } from "../redis/redis-keys.js";

/** Long enough for one node to publish and delete the will, short enough to retry after a crash. */
const CLAIM_TTL_MS = 30_000;
const SCRIPT_DIR = new URL("./lua/", import.meta.url);

/**
 * Exactly one node publishes each will that is not its own connection's: a will whose delay ran
 * out on Redis' timers (`claim`), or a will of a node the survivors stopped hearing from
 * (`claimOfSilentNode`). A claim is a SET NX with a TTL: if the claimant dies before deleting
 * the will, the claim expires and another node publishes it.
 */
export class WillClaims {
  private readonly scripts: RedisScripts<"claimWill">;

  constructor(private readonly redis: RedisClient) {
    this.scripts = new RedisScripts<"claimWill">(redis, SCRIPT_DIR);
  }

  async claim(brokerId: string, clientId: string): Promise<boolean> {
    const key = STATE_KEYS.willClaim(brokerId, clientId);
    return (await this.redis.set(key, "1", "PX", CLAIM_TTL_MS, "NX")) === "OK";
  }

  /** Gives a claim up: its will was not published, another node may take it at once. */
  async release(brokerId: string, clientId: string): Promise<void> {
    await this.redis.del(STATE_KEYS.willClaim(brokerId, clientId));
  }

  /**
   * aedes counts a node dead after three heartbeats missed over pub/sub, which a partition
   * between that node and the others' view of Redis causes too, while the node still holds its
   * clients (their wills are not due, [MQTT-3.1.2-8]). So a silent node's will is claimed only
   * once its lease in Redis is gone as well (a script: claim-will-2.lua).
   */
  async claimOfSilentNode(brokerId: string, clientId: string): Promise<boolean> {
    const lease = `${STATE_KEYS.nodeLeasePrefix}${brokerId}`;
    const claim = STATE_KEYS.willClaim(brokerId, clientId);
    return (await this.scripts.run("claimWill", [lease, claim], [CLAIM_TTL_MS])) === 1;
  }
}
