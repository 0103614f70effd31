import { randomBytes } from "node:crypto";
import { ConfigError } from "../errors.js";
import type { Logger } from "../observability/logger.js";
import type { RedisClient } from "../redis/redis-client.js";
import { STATE_KEYS } from "../redis/redis-keys.js";

/**
 * Extends the lease only if this node still holds it, and with it where this node's connections
 * are (the run id of its Redis server and its instance; "" unknown: not kept). KEYS[1] lease,
 * KEYS[2] server; ARGV token, ms, where.
 */
const RENEW = `if redis.call("GET", KEYS[1]) ~= ARGV[1] then return 0 end
redis.call("PEXPIRE", KEYS[1], ARGV[2])
if ARGV[3] == "" then redis.call("DEL", KEYS[2]) else redis.call("SET", KEYS[2], ARGV[3], "PX", ARGV[2]) end
return 1`;
/** Releases the lease only if this node holds it (KEYS[1] lease, KEYS[2] server; ARGV token). */
const RELEASE = `if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1], KEYS[2]) else return 0 end`;

/** A node's lease key is this plus its id (under the key prefix). */
export const NODE_LEASE_KEY_PREFIX = STATE_KEYS.nodeLeasePrefix;
/** Beside the lease: the run id of the Redis server the node's connections are on, and its instance. */
export const NODE_SERVER_KEY_PREFIX = STATE_KEYS.nodeServerPrefix;

/**
 * Makes node ids unique across the cluster: a node holds a lease on its id in Redis while it
 * lives. A second live node with the same id is refused at start. A node restarted after a
 * crash waits for its old lease to run out (at most one lease), since nobody renews it.
 * With the lease the node keeps where its connections are (its Redis server's run id and its
 * instance), which lets the others tell that they have closed (connection-death.ts).
 */
export class NodeRegistry {
  private readonly token = randomBytes(16).toString("hex");
  private readonly key: string;
  private readonly serverKey: string;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly redis: RedisClient,
    private readonly nodeId: string,
    private readonly leaseMs: number,
    private readonly log: Logger,
    /** Where this node's connections are (serverKeyValue), when known. */
    private readonly whereConnected: () => string | undefined = () => undefined,
  ) {
    this.key = `${NODE_LEASE_KEY_PREFIX}${nodeId}`;
    this.serverKey = `${NODE_SERVER_KEY_PREFIX}${nodeId}`;
  }

  /** Takes the lease, waiting out a stale one; throws ConfigError if a live node holds the id. */
  async claim(): Promise<void> {
    const deadline = Date.now() + this.leaseMs + 1_000;
    for (;;) {
      const taken = await this.redis.set(this.key, this.token, "PX", this.leaseMs, "NX");
      if (taken === "OK") break;
      if (Date.now() > deadline) {
        throw new ConfigError([
          `nodeId: another live node holds the id ${this.nodeId}; node ids must be unique`,
        ]);
      }
      await new Promise((resolve) => setTimeout(resolve, Math.min(500, this.leaseMs / 4)));
    }
    this.timer = setInterval(() => this.renew(), this.leaseMs / 3);
    this.timer.unref();
    this.renew();
  }

  /**
   * Extends the lease now: at each renewal, and when this node's connection to Redis is new
   * (after a failover the others can tell its connections apart only once it has said where
   * they are). Nothing before the lease is held.
   */
  renew(): void {
    if (this.timer === undefined) return;
    const where = this.whereConnected() ?? "";
    this.redis.eval(RENEW, 2, this.key, this.serverKey, this.token, this.leaseMs, where).then(
      (renewed) => (renewed === 0 ? this.retake() : undefined),
      // Redis down: the outage is reported by the fabric; renewal resumes with it.
      () => {},
    );
  }

  /**
   * The lease is not this node's any more. Gone (Redis restarted without its data, or this node
   * was cut off for longer than the lease): taken again, since the other nodes would otherwise
   * count this live node as dead (its wills, its sessions' expiry). Held by another node with
   * the same id: a configuration error, reported.
   */
  private async retake(): Promise<void> {
    const taken = await this.redis
      .set(this.key, this.token, "PX", this.leaseMs, "NX")
      .catch(() => undefined);
    if (taken === "OK") {
      this.renew();
      this.log.warn(
        { event: "node.lease_retaken" },
        "node id lease had vanished from Redis (Redis lost its data, or this node was cut off longer than the lease): taken again",
      );
      return;
    }
    this.log.error(
      { event: "node.lease_lost" },
      "node id lease lost: another node may hold this id",
    );
  }

  async release(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.redis.eval(RELEASE, 2, this.key, this.serverKey, this.token).catch(() => {});
  }
}
