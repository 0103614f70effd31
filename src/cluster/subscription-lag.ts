import { Cluster, type Redis } from "ioredis";
import { asError } from "../errors.js";
import type { Logger } from "../observability/logger.js";
import type { RedisClient } from "../redis/redis-client.js";

/** How often Redis is asked; at 50 MB/s of pub/sub traffic that is 5 MB between two looks. */
const POLL_MS = 100;
/**
 * While another node says it does not read its subscription, how often its key is asked about
 * (one MGET): a node reads again within milliseconds of its subscribers catching up, and
 * publishers held until the next full look (POLL_MS) would leave it nothing to read meanwhile.
 */
const PAUSED_POLL_MS = 5;

/**
 * A node's subscriber connection in CLIENT LIST (node-connections.ts names them; on a Redis
 * Cluster each of a node's shard connections, one per primary, carries the same name).
 */
const SUBSCRIBER_LINE = / name=(sluice\/([A-Za-z0-9._-]+)\/[^/ ]+\/subscriber) .*? omem=(\d+)/;

export interface LagSettings {
  /** The lag past which publishers are held (`redis.backpressure.subscriptionLagBytes`). */
  boundBytes: number;
  /**
   * How long another node's subscription may stay past the bound without once falling under
   * it before it no longer counts (`redis.backpressure.remoteStallMs`).
   */
  stallMs: number;
  /** The key a node sets while it does not read its subscription (RedisFabric.pauseReading). */
  readingPausedKey(nodeId: string): string;
  /** How often CLIENT LIST and the pause keys are read (default POLL_MS). */
  pollMs?: number;
}

interface RemoteSubscription {
  nodeId: string;
  /** When its lag was last at or under the bound. */
  drainedAt: number;
  stalled: boolean;
  seen: number;
}

/**
 * How far the cluster's nodes are behind in reading their Redis subscriptions: Redis' output
 * buffer for each node's subscriber connection (`omem` of CLIENT LIST), which Redis caps with
 * `client-output-buffer-limit pubsub` by closing the connection. Asked on another connection
 * (a subscribed one may send no other command); nodes' subscribers are found by their names.
 *
 * `bytes` is this node's own lag; `clusterBytes` the largest among all nodes' subscriptions,
 * its own included, because a message published here is read by every node: publishers held
 * only for their own node's lag pushed a slower node past Redis' limit (two nodes at QoS 1:
 * the publishers' node acknowledged 38.6k msg/s while the subscribers' node delivered 13.3k).
 * Another node whose lag stays past the bound for `stallMs` without once falling under it is
 * stalled (stopped, cut off, hung), not slow: holding every publisher of the cluster for it
 * would stop the cluster, so it stops counting, and Redis' limit decides its subscription.
 *
 * On a Redis Cluster a node's subscription is sharded (ShardedSubscriber): one connection per
 * primary, each with its share of the messages, so every primary's CLIENT LIST is read, one
 * command per primary in parallel, and a node's lag is the largest over its connections.
 *
 * Where CLIENT LIST is refused (some managed Redis), the lags read 0 and only the outbound
 * pipeline bounds backpressure; that is logged once. Nodes of other clusters on the same
 * Redis (another keyPrefix) count too: their names do not say which cluster they serve.
 */
export class SubscriptionLag {
  bytes = 0;
  clusterBytes = 0;
  /** The node whose lag `clusterBytes` is. */
  laggingNode: string | undefined;
  /** Another node that says it does not read its subscription now: it is behind. */
  pausedNode: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The next look at the paused node's key, while one is paused. */
  private pausedTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private polls = 0;
  private readonly changed: Array<() => void> = [];
  private readonly remotes = new Map<string, RemoteSubscription>();

  constructor(
    /** A single Redis (direct or through Sentinel), or a Cluster whose primaries are asked. */
    private readonly query: RedisClient,
    private readonly subscriberName: string,
    private readonly settings: LagSettings,
    private readonly log: Logger,
  ) {}

  start(): void {
    this.schedule(0);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.pausedTimer);
  }

  onChange(listener: () => void): void {
    this.changed.push(listener);
  }

  /**
   * Reads the CLIENT LIST answers of every server that holds subscriptions, one for a single
   * Redis, one per primary on a Cluster (public for its unit test).
   */
  read(lists: readonly string[], now: number): void {
    const poll = ++this.polls;
    let own = 0;
    let largest = 0;
    let lagging: string | undefined;
    for (const [name, { nodeId, bytes }] of subscriptionLags(lists)) {
      if (name === this.subscriberName) own = bytes;
      else if (!this.counts(name, nodeId, bytes, now, poll)) continue;
      if (bytes > largest) {
        largest = bytes;
        lagging = nodeId;
      }
    }
    for (const [name, remote] of this.remotes) if (remote.seen !== poll) this.remotes.delete(name);
    this.laggingNode = lagging;
    if (own === this.bytes && largest === this.clusterBytes) return;
    this.bytes = own;
    this.clusterBytes = largest;
    for (const listener of this.changed) listener();
  }

  /** Whether another node's subscription counts: it is not stalled. */
  private counts(name: string, nodeId: string, bytes: number, now: number, poll: number): boolean {
    let remote = this.remotes.get(name);
    if (remote === undefined) {
      remote = { nodeId, drainedAt: now, stalled: false, seen: poll };
      this.remotes.set(name, remote);
    }
    remote.seen = poll;
    if (bytes <= this.settings.boundBytes) {
      remote.drainedAt = now;
      if (remote.stalled) {
        remote.stalled = false;
        this.log.info(
          { event: "cluster.remote_lag_draining", node: nodeId, bytes },
          "another node reads its Redis subscription again: publishers wait for it again",
        );
      }
      return true;
    }
    if (!remote.stalled && now - remote.drainedAt > this.settings.stallMs) {
      remote.stalled = true;
      this.log.warn(
        { event: "cluster.remote_lag_stalled", node: nodeId, bytes },
        "another node has not read its Redis subscription for a while: publishers no longer " +
          "wait for it, and Redis cuts its subscription at client-output-buffer-limit pubsub",
      );
    }
    return !remote.stalled;
  }

  /**
   * Which other node, if any, says it has stopped reading its subscription: the kernel's
   * socket buffers (megabytes) hold what it does not read before Redis' output buffer, and so
   * the lag, grows. A stalled node's key expires with it.
   */
  private async readPauses(): Promise<void> {
    const nodeIds = [...new Set([...this.remotes.values()].map((r) => r.nodeId))];
    let paused: string | undefined;
    if (nodeIds.length > 0) {
      try {
        const values = await this.query.mget(
          nodeIds.map((id) => this.settings.readingPausedKey(id)),
        );
        paused = nodeIds.find((_id, i) => values[i] !== null);
      } catch {
        paused = this.pausedNode;
      }
    }
    if (paused !== undefined) this.watchPaused();
    if (paused === this.pausedNode) return;
    this.pausedNode = paused;
    for (const listener of this.changed) listener();
  }

  /** Looks at the pause keys again soon, and so on while a node is paused. */
  private watchPaused(): void {
    if (this.pausedTimer !== undefined || this.stopped) return;
    this.pausedTimer = setTimeout(() => {
      this.pausedTimer = undefined;
      if (this.query.status === "ready") void this.readPauses();
    }, PAUSED_POLL_MS);
    this.pausedTimer.unref();
  }

  private schedule(ms = this.settings.pollMs ?? POLL_MS): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.poll(), ms);
    this.timer.unref();
  }

  private async poll(): Promise<void> {
    if (this.query.status !== "ready") return this.schedule();
    const servers: Redis[] =
      this.query instanceof Cluster ? this.query.nodes("master") : [this.query];
    const answers = await Promise.allSettled(
      servers.map((server) => server.call("CLIENT", "LIST", "TYPE", "pubsub")),
    );
    const lists: string[] = [];
    for (const answer of answers) {
      if (answer.status === "fulfilled") {
        lists.push(String(answer.value));
        continue;
      }
      const err = asError(answer.reason);
      if (/NOPERM|unknown (sub)?command|ERR unknown/i.test(err.message)) {
        this.log.info(
          { event: "redis.subscription_lag_unmeasured", err },
          "CLIENT LIST refused: the subscriptions' lag is not measured, backpressure follows the outbound pipeline only",
        );
        return;
      }
    }
    // A primary that did not answer (lost, failing over) took its subscriptions' buffers with
    // it: the others' answers are the lag.
    if (lists.length === 0) return this.schedule();
    this.read(lists, Date.now());
    await this.readPauses();
    this.schedule();
  }
}

/**
 * Each subscriber connection's output buffer by connection name, the largest where a name is
 * on several servers (a node's shard connections on a Cluster's primaries). The largest, not
 * the sum: Redis' limit (`client-output-buffer-limit pubsub`) cuts each connection on its own
 * once its own buffer passes it, and `subscriptionLagBytes` is a bound under that limit; a sum
 * would make the same bound hold publishers at a third of it per connection on three primaries,
 * and mean something else on every topology. What a node has to read in all is then up to the
 * bound per primary, each primary's memory bounded as on a single Redis.
 */
function subscriptionLags(
  lists: readonly string[],
): Map<string, { nodeId: string; bytes: number }> {
  const lags = new Map<string, { nodeId: string; bytes: number }>();
  for (const list of lists) {
    for (const line of list.split("\n")) {
      const match = SUBSCRIBER_LINE.exec(line);
      if (!match) continue;
      const [, name = "", nodeId = "", omem = "0"] = match;
      const bytes = Number(omem);
      const known = lags.get(name);
      if (known === undefined) lags.set(name, { nodeId, bytes });
      else if (bytes > known.bytes) known.bytes = bytes;
    }
  }
  return lags;
}
