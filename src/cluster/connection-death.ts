import { Redis } from "ioredis";
import type { Logger } from "../observability/logger.js";
import type { RedisClient } from "../redis/redis-client.js";
import { nodeConnectionPrefix, parseServerKeyValue } from "./node-connections.js";
import { NODE_LEASE_KEY_PREFIX, NODE_SERVER_KEY_PREFIX } from "./node-registry.js";

/**
 * Deletes a node's lease and server key, unless the node wrote its server key again meanwhile
 * (it came back). KEYS[1] lease, KEYS[2] server; ARGV[1] the server key read with the proof.
 */
const RELEASE_DEAD = `if redis.call("GET", KEYS[2]) ~= ARGV[1] then return 0 end
redis.call("DEL", KEYS[1], KEYS[2])
return 1`;

const RUN_ID = /^run_id:([0-9a-f]+)\r?$/m;

/** The run id in an INFO server reply, if any. */
export function runIdOf(info: string): string | undefined {
  return RUN_ID.exec(info)?.[1];
}

/**
 * Keeps the run id of the Redis server a connection is on, read again at each (re)connect: it
 * changes when Redis restarts or a Sentinel failover moves the connection to another server.
 */
export class RedisServerIdentity {
  private current: string | undefined;

  constructor(
    private readonly redis: Redis,
    private readonly onChange: () => void,
  ) {}

  get runId(): string | undefined {
    return this.current;
  }

  start(): void {
    this.redis.on("ready", () => void this.read());
    if (this.redis.status === "ready") void this.read();
  }

  private async read(): Promise<void> {
    // A reply from a later connection than the one that became ready is as good: it names the
    // server that connection is on.
    const runId = runIdOf(await this.redis.info("server").catch(() => ""));
    if (runId === undefined || runId === this.current) return;
    this.current = runId;
    this.onChange();
  }
}

/**
 * Proves a silent node dead by its connections. A process that ends (a crash, SIGKILL, the OOM
 * killer) has its sockets closed by the kernel, and Redis drops its connections at once; a
 * partition, or a process that stalls, leaves them open in Redis (no FIN crosses a cut link).
 * So a node that is silent and has no connection left on the Redis server it said it was on is
 * gone (its process: a restart under the same id has connections of another instance): its
 * lease is released for it, and the cluster acts on its death (wills, sessions,
 * shared-subscription members) within seconds instead of after the lease.
 *
 * Only where that reading holds: on a single Redis or Sentinel (a Cluster spreads connections
 * over servers), when the node's server key names the very server asked (after a failover it
 * names the old one until the node renews), and when Redis' own `timeout` (which closes idle
 * connections, a cut node's too) is off or not shorter than the lease.
 */
export class ConnectionDeathProof {
  /** The server last checked for `timeout`, and whether proofs hold on it. */
  private checked: { runId: string; usable: boolean } | undefined;
  private warnedRefusal = false;

  constructor(
    private readonly redis: RedisClient,
    private readonly leaseMs: number,
    private readonly log: Logger,
  ) {}

  /** Whether `nodeId` is proven gone; its lease is released when it is. */
  async provenGone(nodeId: string): Promise<boolean> {
    const redis = this.redis;
    if (!(redis instanceof Redis)) return false;
    const server = this.checked ?? (await this.checkServer(redis));
    if (!server?.usable) return false;
    const serverKey = `${NODE_SERVER_KEY_PREFIX}${nodeId}`;
    let replies: [error: Error | null, result: unknown][] | null;
    try {
      // One transaction: the key, the run id and the connections are read on one server.
      replies = await redis.multi().get(serverKey).info("server").client("LIST").exec();
    } catch (err) {
      this.refused(err);
      return false;
    }
    const [named, info, list] = (replies ?? []).map(([error, result]) =>
      error === null ? result : undefined,
    );
    if (typeof info !== "string" || typeof list !== "string") return false;
    if (runIdOf(info) !== server.runId) {
      this.checked = undefined; // another server now: its `timeout` is read at the next ask
      return false;
    }
    if (typeof named !== "string") return false;
    const where = parseServerKeyValue(named);
    if (where?.runId !== server.runId) return false;
    if (list.includes(` name=${nodeConnectionPrefix({ nodeId, instance: where.instance })}`))
      return false;
    const lease = `${NODE_LEASE_KEY_PREFIX}${nodeId}`;
    return (await redis.eval(RELEASE_DEAD, 2, lease, serverKey, named)) === 1;
  }

  private async checkServer(redis: Redis): Promise<{ runId: string; usable: boolean } | undefined> {
    const runId = runIdOf(await redis.info("server").catch(() => ""));
    if (runId === undefined) return undefined;
    let timeoutSeconds: number | undefined;
    try {
      const reply = (await redis.config("GET", "timeout")) as unknown;
      if (Array.isArray(reply)) timeoutSeconds = Number(reply[1]);
    } catch {
      // Managed Redis often refuses CONFIG; its idle timeout is off by default.
    }
    const usable =
      timeoutSeconds === undefined || timeoutSeconds === 0 || timeoutSeconds * 1000 >= this.leaseMs;
    if (!usable || timeoutSeconds === undefined) {
      this.log.warn(
        { event: "redis.idle_timeout", timeoutSeconds: timeoutSeconds ?? null, usable },
        usable
          ? "could not read Redis' timeout (CONFIG refused?): a node with no connection left in Redis is counted dead; make sure timeout is 0 or at least nodeLeaseSeconds"
          : "Redis' timeout closes idle connections sooner than the node lease: dead nodes are known by their lease only",
      );
    }
    this.checked = { runId, usable };
    return this.checked;
  }

  private refused(err: unknown): void {
    // Redis being away is the fabric's to report; only a refusal is this module's.
    if (this.warnedRefusal || !/NOPERM|unknown command|EXECABORT/i.test(String(err))) return;
    this.warnedRefusal = true;
    this.log.warn(
      { event: "redis.client_list_refused", err },
      "Redis refused CLIENT LIST in a transaction: dead nodes are known by their lease only",
    );
  }
}
