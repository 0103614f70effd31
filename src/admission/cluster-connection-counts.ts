import type { Logger } from "../observability/logger.js";
import type { RedisClient } from "../redis/redis-client.js";

/** A quota on open connections per username (checked once the CONNECT is authenticated). */
export interface UsernameQuota {
  /** Counts one more connection of `username`, unless that would exceed the limit. */
  claim(username: string): Promise<boolean>;
  /** One connection of `username` ended. */
  release(username: string): void;
}

/** One node's count of each username's connections (no Redis). */
export class LocalUsernameQuota implements UsernameQuota {
  private readonly open = new Map<string, number>();

  constructor(private readonly limit: number) {}

  async claim(username: string): Promise<boolean> {
    const count = this.open.get(username) ?? 0;
    if (count >= this.limit) return false;
    this.open.set(username, count + 1);
    return true;
  }

  release(username: string): void {
    const count = (this.open.get(username) ?? 1) - 1;
    if (count <= 0) this.open.delete(username);
    else this.open.set(username, count);
  }
}

const NODES = "conn-nodes";
const COUNTS = "conns:";

/**
 * KEYS this node's counts, the set of nodes; ARGV node id, open connections, TTL ms, the key
 * prefix of counts. Writes this node's total and returns the other live nodes' sum, and whether
 * this node's counts were still there; nodes whose counts expired (they died) leave the set.
 */
const SYNC = `
local existed = redis.call("EXISTS", KEYS[1])
redis.call("HSET", KEYS[1], "total", ARGV[2])
redis.call("PEXPIRE", KEYS[1], ARGV[3])
redis.call("SADD", KEYS[2], ARGV[1])
local others = 0
for _, node in ipairs(redis.call("SMEMBERS", KEYS[2])) do
  if node ~= ARGV[1] then
    local total = redis.call("HGET", ARGV[4] .. node, "total")
    if total then others = others + tonumber(total) else redis.call("SREM", KEYS[2], node) end
  end
end
return {others, existed}`;

/**
 * KEYS this node's counts, the set of nodes; ARGV node id, field, limit, TTL ms, the key prefix
 * of counts. Counts one more connection for the field unless the live nodes' sum is at the limit.
 */
const CLAIM = `
redis.call("SADD", KEYS[2], ARGV[1])
local sum = 0
for _, node in ipairs(redis.call("SMEMBERS", KEYS[2])) do
  sum = sum + tonumber(redis.call("HGET", ARGV[5] .. node, ARGV[2]) or "0")
end
if sum >= tonumber(ARGV[3]) then return 0 end
redis.call("HINCRBY", KEYS[1], ARGV[2], 1)
redis.call("PEXPIRE", KEYS[1], ARGV[4])
return 1`;

/** KEYS this node's counts; ARGV field. */
const RELEASE = `
if redis.call("HINCRBY", KEYS[1], ARGV[1], -1) <= 0 then redis.call("HDEL", KEYS[1], ARGV[1]) end
return 0`;

/**
 * Connection counts across the cluster, kept per node in Redis: one hash per node (its total and
 * its count per username) that expires unless the node renews it, so the counts of a node that
 * dies leave with it instead of leaking. The cluster-wide total is read once a second and checked
 * locally; a username's count is checked and counted at its CONNECT, in one script.
 */
export class ClusterConnectionCounts implements UsernameQuota {
  private readonly ownKey: string;
  private readonly countsPrefix: string;
  private othersOpen = 0;
  private timer: NodeJS.Timeout | undefined;
  /** This node's own count per username: the truth its hash in Redis is rebuilt from. */
  private readonly mine = new Map<string, number>();
  /** A release failed, or Redis lost the hash: rewrite it from `mine` at the next sync. */
  private dirty = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly nodeId: string,
    private readonly ttlMs: number,
    private readonly usernameLimit: number | undefined,
    private readonly localOpen: () => number,
    private readonly log: Logger,
  ) {
    this.ownKey = `${COUNTS}${nodeId}`;
    this.countsPrefix = `${redis.options.keyPrefix ?? ""}${COUNTS}`;
  }

  /** Open connections on the other live nodes, as of the last sync (at most a second old). */
  otherNodesOpen(): number {
    return this.othersOpen;
  }

  start(): void {
    const sync = (): void => {
      this.redis
        .eval(
          SYNC,
          2,
          this.ownKey,
          NODES,
          this.nodeId,
          this.localOpen(),
          this.ttlMs,
          this.countsPrefix,
        )
        .then(
          (reply) => {
            const [others, existed] = reply as [number, number];
            this.othersOpen = Number(others);
            if (existed === 0 || this.dirty) this.rebuild();
          },
          // Redis down: the outage is reported by the fabric; the last known sum stands.
          (error: unknown) =>
            this.log.debug({ event: "connections.sync_failed", err: error }, "count sync failed"),
        );
    };
    sync();
    this.timer = setInterval(sync, 1_000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Rewrites this node's hash from its own counts, atomically (one key, one MULTI). */
  private rebuild(): void {
    this.dirty = false;
    const fields: string[] = ["total", String(this.localOpen())];
    for (const [username, count] of this.mine) fields.push(`u:${username}`, String(count));
    this.redis
      .multi()
      .del(this.ownKey)
      .hset(this.ownKey, ...fields)
      .pexpire(this.ownKey, this.ttlMs)
      .exec()
      .catch(() => {
        this.dirty = true;
      });
  }

  /**
   * While Redis is unreachable the quota cannot be checked cluster-wide: the connection is
   * admitted (Redis being down already keeps new clients away through /readyz).
   */
  async claim(username: string): Promise<boolean> {
    if (this.usernameLimit === undefined) return true;
    const claimed = await this.redis
      .eval(
        CLAIM,
        2,
        this.ownKey,
        NODES,
        this.nodeId,
        `u:${username}`,
        this.usernameLimit,
        this.ttlMs,
        this.countsPrefix,
      )
      .catch(() => {
        this.dirty = true; // counted here only: written to Redis at the next sync
        return 1;
      });
    if (claimed !== 1) return false;
    this.mine.set(username, (this.mine.get(username) ?? 0) + 1);
    return true;
  }

  release(username: string): void {
    if (this.usernameLimit === undefined) return;
    const count = (this.mine.get(username) ?? 1) - 1;
    if (count <= 0) this.mine.delete(username);
    else this.mine.set(username, count);
    this.redis.eval(RELEASE, 1, this.ownKey, `u:${username}`).catch(() => {
      this.dirty = true;
    });
  }
}
