import { EventEmitter } from "node:events";
import { readFileSync } from "node:fs";
import type { ConnectionOptions } from "node:tls";
import { Cluster, Redis, type RedisOptions } from "ioredis";
import type { SluiceConfig } from "../config/schema.js";
import { redisEmitter } from "../engine/emitters.js";
import { PendingPublishes, type Publisher, promisePublisher } from "../engine/local-first.js";
import type { QueueLimits } from "../engine/persistence-types.js";
import { RedisPersistence } from "../engine/redis-persistence.js";
import type { ReplicaAcks } from "../engine/replica-acks.js";
import { asError } from "../errors.js";
import type { Logger } from "../observability/logger.js";
import { checkPubsubOutputLimit, type LimitTarget } from "../redis/output-buffer-limit.js";
import { PublishBatcher } from "../redis/publish-command.js";
import type { RedisClient } from "../redis/redis-client.js";
import { PersistenceKeys, STATE_KEYS } from "../redis/redis-keys.js";
import { coalesceEveryWrite, releaseHeldWrites } from "../transport/write-coalescing.js";
import { type NodeInstance, nodeConnectionName } from "./node-connections.js";
import { replicaAcksOn } from "./replica-ack-connection.js";
import { ShardChannels } from "./shard-channels.js";
import { type ShardConnector, ShardedSubscriber } from "./sharded-subscriber.js";
import { SubscriptionBatcher } from "./subscription-batcher.js";
import { SubscriptionLag } from "./subscription-lag.js";

type RedisConfig = NonNullable<SluiceConfig["redis"]>;

/** How long a node's "not reading" key lives unless refreshed: a node that dies paused. */
const READING_PAUSED_TTL_MS = 1_500;
const READING_PAUSED_REFRESH_MS = 500;

/** A connection the fabric watches: one to Redis, or the sharded subscriber's set of them. */
type FabricConnection = RedisClient | ShardedSubscriber;

/** What a fabric tells whoever listens, at any time after it is built. */
export interface RedisFabricEvents {
  /** Every connection is ready (true), or one is lost (false). */
  state: [up: boolean];
  /** The pub/sub subscriber connection is back after a loss, with its subscriptions. */
  "subscriber-restored": [];
  /**
   * Redis cut the subscriber connection alone (see watchSubscriber), now restored: emitted
   * before its "subscriber-restored".
   */
  "subscription-reset": [];
  /** A message on the subscription was not an envelope: dropped (logged by the emitter). */
  "undecodable-message": [];
}

/** Counting retained keys on a Cluster scans every primary: at most this often. */
const CLUSTER_RETAINED_COUNT_MS = 30_000;

/**
 * The Redis side of a cluster node: pub/sub between nodes (mqemitter-redis) and shared state
 * (Sluice's RedisPersistence: sessions, subscriptions, retained, in-flight, wills), on ioredis
 * connections Sluice builds and watches itself. Its own connections matter: mqemitter-redis's
 * default ones run ioredis' ready check (INFO) on the subscriber connection, which Redis
 * refuses in subscriber mode and which surfaced as an unhandled error (ioredis issue 2037; seen
 * here on the first try with aedes 1.2).
 */
export class RedisFabric extends EventEmitter<RedisFabricEvents> {
  readonly mq: unknown;
  /**
   * The connection for Sluice's own keys (the key prefix applies). On a Cluster they share one
   * hash slot, `{state}`, since Sluice's scripts touch several of them at once.
   */
  readonly state: RedisClient;
  readonly persistence: RedisPersistence;
  /** Replica confirmations of the writes acknowledgements depend on (`redis.replicaAcks`). */
  readonly replicaAcks: ReplicaAcks | undefined;
  /** PUBLISHes Redis has not answered yet: the outbound pipeline. */
  private readonly pending = new PendingPublishes();
  /** Redis' output buffers for the nodes' subscriptions. */
  private readonly subscriptionLag: SubscriptionLag;
  /** What cluster backpressure watches: the outbound pipeline and the subscription's lag. */
  readonly load = {
    pendingBytes: (): number => this.pending.bytes,
    lagBytes: (): number => this.subscriptionLag.bytes,
    /** The largest lag among the cluster's nodes that read their subscriptions, this one's too. */
    clusterLagBytes: (): number => this.subscriptionLag.clusterBytes,
    /** The node whose lag clusterLagBytes is. */
    laggingNode: (): string | undefined => this.subscriptionLag.laggingNode,
    /** Another node that does not read its subscription now (SubscriptionThrottle). */
    pausedNode: (): string | undefined => this.subscriptionLag.pausedNode,
    onChange: (listener: () => void): void => {
      this.pending.onAnswered(listener);
      this.subscriptionLag.onChange(listener);
    },
  };
  private readonly connections: FabricConnection[];
  private readonly subscriber: Redis | ShardedSubscriber;
  private readonly readingPausedKey: string;
  /** When this node last said it does not read its subscription (0: it reads). */
  private pausedAnnouncedAt = 0;
  /** The persistence's connection on a Cluster (its keys spread over the slots), else state. */
  private readonly stored: RedisClient;
  /** Where the persistence keeps retained messages (one hash, or one key per topic). */
  private readonly keys: PersistenceKeys;
  /** Sentinel form: one connection per Sentinel, listening for a new primary. */
  private readonly sentinelWatchers: Redis[] = [];
  /** The primary Sentinel last announced ("host:port"), so a switch is acted on once. */
  private announcedPrimary: string | undefined;
  private lastRetainedCount = 0;
  private lastRetainedCountAt = 0;
  private readonly ready = new Set<FabricConnection>();
  /** Losses of the connections other than the subscriber, since start. */
  private otherLosses = 0;
  private up = false;
  private limitChecked = false;
  private readonly upWaiters = new Set<() => void>();

  constructor(
    config: RedisConfig,
    node: NodeInstance,
    private readonly log: Logger,
    /** The cap on each session's stored queue. */
    queue: QueueLimits,
  ) {
    super();
    const connect = connectionFactory(config);
    this.keys = new PersistenceKeys(config.keyPrefix);
    const clustered = config.cluster !== undefined;
    const state = connect({
      keyPrefix: clustered ? `${config.keyPrefix}{state}:` : config.keyPrefix,
      connectionName: nodeConnectionName(node, "state"),
    });
    const stored = clustered ? connect({ keyPrefix: config.keyPrefix }) : state;
    const publisher = connect({ connectionName: nodeConnectionName(node, "publisher") });
    // Subscriber mode allows no INFO, so no ready check on this one. Its name finds it in
    // CLIENT LIST (its lag).
    const subscriberName = nodeConnectionName(node, "subscriber");
    let subscriber: Redis | ShardedSubscriber;
    let route: Publisher;
    if (publisher instanceof Cluster) {
      const channels = new ShardChannels(config.keyPrefix);
      subscriber = new ShardedSubscriber(
        publisher,
        channels.all,
        channels.slots,
        shardConnector(config, subscriberName),
        log,
      );
      route = promisePublisher((topic, message) => publisher.spublish(channels.of(topic), message));
    } else {
      subscriber = connect({ enableReadyCheck: false, connectionName: subscriberName }) as Redis;
      // The batch goes out in the check phase: it and the local copies before it leave then.
      const batcher = new PublishBatcher(publisher as Redis, releaseHeldWrites);
      route = {
        publish: (topic, message, answered) => batcher.publish(topic, message, answered),
      };
    }
    this.state = state;
    this.stored = stored;
    this.subscriber = subscriber;
    this.readingPausedKey = STATE_KEYS.readingPaused(node.nodeId);
    const acks = replicaAcksOn(config, connect, node, log);
    this.replicaAcks = acks?.acks;
    this.connections = [
      ...new Set([state, stored, publisher, subscriber, ...(acks ? [acks.connection] : [])]),
    ];
    for (const connection of this.connections) {
      if (connection !== subscriber) this.watch(connection as RedisClient);
      coalesceCommands(connection);
    }
    this.watchSubscriber(
      subscriber,
      subscriber instanceof Redis ? new SubscriptionBatcher(subscriber) : undefined,
    );
    if (config.sentinels && config.name) this.followSwitchovers(config);
    this.persistence = new RedisPersistence({
      db: stored,
      log,
      ...queue,
      ...(this.replicaAcks && { replicaAcks: this.replicaAcks }),
    });
    // Its types name Redis only; it uses nothing a Cluster or the sharded subscriber lacks
    // (events, and (p)subscribe on the subscriber; every message goes through `route`).
    this.mq = redisEmitter(publisher as Redis, subscriber as unknown as Redis, log, {
      pending: this.pending,
      format: config.messageFormat,
      route,
      reservations: this.persistence.inboundQos2,
      undecodable: () => this.emit("undecodable-message"),
    });
    // On a Cluster the lag is read on every primary (its shard connections carry this name).
    this.subscriptionLag = new SubscriptionLag(
      state,
      subscriberName,
      {
        boundBytes: config.backpressure.subscriptionLagBytes,
        stallMs: config.backpressure.remoteStallMs,
        readingPausedKey: STATE_KEYS.readingPaused,
      },
      log,
    );
    this.subscriptionLag.start();
  }

  /**
   * Stops or restarts reading the subscriber connection (SubscriptionThrottle): what the node
   * does not read waits in Redis' output buffer for it, where every node's backpressure sees
   * it. Only a ready connection is paused: a reconnecting one must read its resubscriptions'
   * answers to become ready. On a Cluster every shard connection is (ShardedSubscriber).
   */
  pauseReading(paused: boolean): boolean {
    const subscriber = this.subscriber;
    if (!paused) {
      if (subscriber instanceof ShardedSubscriber) subscriber.pauseReading(false);
      else subscriber.stream?.resume();
      if (this.pausedAnnouncedAt !== 0) {
        this.pausedAnnouncedAt = 0;
        this.state.del(this.readingPausedKey).catch(() => {});
      }
      return true;
    }
    if (subscriber instanceof ShardedSubscriber) {
      if (!subscriber.pauseReading(true)) return false;
    } else {
      const stream = subscriber.stream;
      if (stream === undefined || !this.ready.has(subscriber)) return false;
      stream.pause();
    }
    // The kernel's socket buffers hold megabytes before Redis' output buffer grows: the other
    // nodes learn of the pause from this key, not only from the lag (SubscriptionLag).
    const now = Date.now();
    if (now - this.pausedAnnouncedAt >= READING_PAUSED_REFRESH_MS) {
      this.pausedAnnouncedAt = now;
      this.state.set(this.readingPausedKey, "1", "PX", READING_PAUSED_TTL_MS).catch(() => {});
    }
    return true;
  }

  /** Whether every connection is ready: the node may take clients. */
  isUp(): boolean {
    return this.up;
  }

  /**
   * Resolves true once all connections are ready, or false after `timeoutMs` (never, without
   * one).
   */
  waitUntilReady(timeoutMs?: number): Promise<boolean> {
    if (this.up) return Promise.resolve(true);
    return new Promise((resolve) => {
      const onUp = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      const timer =
        timeoutMs === undefined
          ? undefined
          : setTimeout(() => {
              this.upWaiters.delete(onUp);
              resolve(false);
            }, timeoutMs);
      this.upWaiters.add(onUp);
    });
  }

  /**
   * Retained messages in Redis: HLEN of one hash (O(1)) on a single Redis; on a Cluster, a
   * SCAN of every primary at most every 30 s. While Redis is down the last known count is
   * returned rather than making a scrape wait or fail.
   */
  async retainedCount(): Promise<number> {
    if (!this.up) return this.lastRetainedCount;
    const stored = this.stored;
    try {
      if (!(stored instanceof Cluster)) {
        this.lastRetainedCount = await stored.hlen(this.keys.retainedHash);
      } else if (Date.now() - this.lastRetainedCountAt >= CLUSTER_RETAINED_COUNT_MS) {
        this.lastRetainedCountAt = Date.now();
        this.lastRetainedCount = await countKeys(
          stored,
          this.keys.pattern(this.keys.retainedTopic("")),
        );
      }
    } catch {
      // keep the last known value
    }
    return this.lastRetainedCount;
  }

  /**
   * Drops every connection and opens it again, when the node fenced itself (RedisFence): after
   * a partition TCP would find Redis again only at its next retransmission, which backs off to
   * minutes; a new connection is tried every 2 s at most. The drop also makes the loss visible
   * (`redis.down`), so the recoveries that follow one run: the pub/sub gap, the ownership check.
   * A Cluster's sharded subscriber follows its Cluster.
   */
  reconnect(): void {
    for (const connection of this.connections) {
      if (connection instanceof Redis || connection instanceof Cluster) connection.disconnect(true);
    }
  }

  async close(): Promise<void> {
    this.subscriptionLag.stop();
    for (const watcher of this.sentinelWatchers) watcher.disconnect();
    await Promise.all(this.connections.map((c) => c.quit().catch(() => c.disconnect())));
  }

  /**
   * Redis pub/sub delivers only to connections subscribed at that moment: when the subscriber
   * connection comes back after a loss, this node has missed messages and subscription
   * broadcasts, and says so once it is subscribed again.
   *
   * ioredis says 'ready' before it re-sends the subscriptions the connection had, and counting
   * it ready then let the node report Redis up while its subscriptions were not yet in force: a
   * message published elsewhere at that moment never reached this node's clean-session
   * clients (a test waited forever for one). A PING queued after the re-sent (P)SUBSCRIBEs is
   * answered once Redis has them all (the batcher sends them a turn later: the PING waits for
   * it); only then is the connection ready. On a Cluster the subscriber is the sharded one,
   * ready when every shard channel is subscribed on its primary: its 'ready' stands.
   *
   * A loss is a cut of the subscription (counted, and logged as `redis.subscription_reset`)
   * when every other connection of the node was ready when the subscriber went and none of
   * them was lost until it was back: Redis closed this one connection (a subscriber past
   * `client-output-buffer-limit pubsub`, a CLIENT KILL) while it served the others. When
   * Redis goes away as a whole (a restart, a failover, the network) every connection drops
   * within the same few turns, well before the first reconnect (100 ms): that is an outage,
   * reported by `redis.down`, not a cut. The decision waits for the subscriber's return, so
   * the other connections' losses of the same outage, in whatever order they arrive, are
   * seen. On a Cluster the other connections are Clusters, which stay ready while one primary
   * is lost: there the sharded subscriber also says whether its loss was Redis closing its
   * connections alone (interruptedAlone) rather than a primary lost or a slot moved.
   */
  private watchSubscriber(
    subscriber: Redis | ShardedSubscriber,
    batcher: SubscriptionBatcher | undefined,
  ): void {
    let lost = false;
    let losses = 0;
    /** When the subscriber was lost while the others were ready, and their losses then. */
    let cut: { at: number; otherLosses: number } | undefined;
    const gone = (): void => {
      this.ready.delete(subscriber);
      this.update();
    };
    const events = subscriber as NodeJS.EventEmitter;
    events.on("end", gone);
    // ioredis emits 'error' on every failed reconnect: state changes are logged in update().
    events.on("error", () => {});
    events.on("close", () => {
      gone();
      if (!lost) {
        cut = this.othersReady(subscriber)
          ? { at: Date.now(), otherLosses: this.otherLosses }
          : undefined;
      }
      lost = true;
      losses++;
    });
    events.on("ready", () => {
      const since = losses;
      const subscribed = (): void => {
        if (since !== losses) return;
        this.markReady(subscriber);
        if (!lost) return;
        lost = false;
        const alone = !(subscriber instanceof ShardedSubscriber) || subscriber.interruptedAlone;
        if (cut !== undefined && cut.otherLosses === this.otherLosses && alone) {
          this.subscriptionReset(Date.now() - cut.at);
        }
        this.emit("subscriber-restored");
      };
      if (subscriber instanceof ShardedSubscriber) {
        subscribed();
        return;
      }
      // After ioredis' own 'ready' handler has queued the re-subscriptions.
      const ping = (): void => {
        subscriber.ping().then(subscribed, () => {
          // Lost again before the answer: the next 'ready' starts over.
        });
      };
      process.nextTick(() => (batcher ? batcher.afterQueued(ping) : ping()));
    });
  }

  private othersReady(subscriber: FabricConnection): boolean {
    return this.connections.every((c) => c === subscriber || this.ready.has(c));
  }

  private subscriptionReset(downMs: number): void {
    this.log.warn(
      { event: "redis.subscription_reset", downMs },
      "Redis closed this node's pub/sub connection while its other connections stayed up " +
        "(a subscriber past client-output-buffer-limit pubsub, or CLIENT KILL): " +
        "what was published meanwhile did not reach this node",
    );
    this.emit("subscription-reset");
  }

  /**
   * Re-reads every stored subscription into this node's view of the cluster's subscriptions
   * (kept in memory, fed by broadcasts this node may have missed). Resolves with the number of
   * subscriptions read.
   */
  resyncSubscriptions(): Promise<number> {
    return this.persistence.resyncSubscriptions();
  }

  /**
   * Sentinel moves the primary role when the primary dies, when it is cut off from the
   * Sentinels, or on request (SENTINEL FAILOVER). When it dies, the connections break and
   * reconnect through the Sentinels by themselves. Otherwise the old primary stays up and keeps
   * taking writes (lost when it resyncs as a replica) until Sentinel demotes it and drops its
   * clients, some 10 s after the switch if it can reach it at all. So each Sentinel is asked
   * for `+switch-master`, and on the first announcement of a new primary every connection that
   * is connected reconnects, through the Sentinels, to the new one.
   *
   * Not ioredis' `failoverDetector`: it leaves a connection ended for good when the
   * announcement arrives while that connection asks a Sentinel for the primary (the connector
   * is told to stop connecting), and quit() leaves its Sentinel connections open (ioredis issue
   * 1362).
   */
  private followSwitchovers(config: RedisConfig): void {
    for (const { host, port } of config.sentinels ?? []) {
      const watcher = new Redis({
        host,
        port,
        ...(config.sentinelPassword === undefined ? {} : { password: config.sentinelPassword }),
        retryStrategy: (times) => Math.min(times * 100, 2_000),
        // The SUBSCRIBE waits for the Sentinel however long it is away.
        maxRetriesPerRequest: null,
      });
      watcher.on("error", () => {});
      watcher.on("message", (_channel: string, message: string) =>
        this.onSwitchMaster(config.name, message),
      );
      watcher.subscribe("+switch-master").catch(() => {});
      this.sentinelWatchers.push(watcher);
    }
  }

  private onSwitchMaster(name: string | undefined, message: string): void {
    // "<name> <old ip> <old port> <new ip> <new port>", from each Sentinel.
    const [master, oldHost, oldPort, newHost, newPort] = message.split(" ");
    const primary = `${newHost}:${newPort}`;
    if (master !== name || primary === this.announcedPrimary) return;
    this.announcedPrimary = primary;
    this.log.warn(
      { event: "redis.switch_master", from: `${oldHost}:${oldPort}`, to: primary },
      "sentinel switched the primary: reconnecting",
    );
    for (const connection of this.connections) {
      if (!(connection instanceof Redis)) continue; // a Cluster has no Sentinels
      // Only connected ones: ending a connection while it asks a Sentinel ends it for good. And
      // not those already on the new primary: after a crash they may have reconnected to it,
      // through a Sentinel, before this announcement arrived.
      const { status, stream } = connection;
      const connected = status === "ready" || status === "connect";
      if (connected && `${stream.remoteAddress}:${stream.remotePort}` !== primary) {
        connection.disconnect(true);
      }
    }
  }

  /** Every connection but the subscriber (watchSubscriber). */
  private watch(connection: RedisClient): void {
    connection.on("ready", () => this.markReady(connection));
    const lost = (): void => {
      this.otherLosses++;
      // A write answered before this loss may be on a primary that is gone.
      this.replicaAcks?.connectionLost();
      this.ready.delete(connection);
      this.update();
    };
    connection.on("close", lost);
    connection.on("end", lost);
    // ioredis emits 'error' on every failed reconnect: state changes are logged in update().
    connection.on("error", () => {});
  }

  private markReady(connection: FabricConnection): void {
    this.ready.add(connection);
    this.update();
  }

  private update(): void {
    const up = this.ready.size === this.connections.length;
    if (up === this.up) return;
    this.up = up;
    if (up) this.log.info({ event: "redis.up" }, "redis reachable");
    else this.log.error({ event: "redis.down" }, "redis unreachable: not ready for new clients");
    this.emit("state", up);
    if (up) {
      for (const waiter of this.upWaiters) waiter();
      this.upWaiters.clear();
      if (!this.limitChecked) {
        this.limitChecked = true;
        checkPubsubOutputLimit(this.limitTargets(), this.log).catch((error: unknown) =>
          this.log.info(
            { event: "redis.output_buffer_limit_unchecked", err: asError(error) },
            "could not read Redis' client-output-buffer-limit",
          ),
        );
      }
    }
  }

  /**
   * The servers whose `client-output-buffer-limit` applies to this node's subscriber: the
   * primary (directly or as Sentinel named it); on a Cluster every node, replicas too: the
   * shard subscribers are on the primaries, and a replica becomes one on a failover.
   */
  private limitTargets(): LimitTarget[] {
    const state = this.state;
    if (state instanceof Cluster) {
      return state.nodes("all").map((node) => ({
        address: `${node.options.host}:${node.options.port}`,
        connection: node,
      }));
    }
    const { remoteAddress, remotePort } = state.stream;
    return [{ address: `${remoteAddress}:${remotePort}`, connection: state }];
  }
}

/**
 * The commands a connection is given in one turn of the event loop leave in one write (each
 * socket ioredis opens, reconnects included). A Cluster's node connections are its own, and
 * the shard subscribers only SSUBSCRIBE: left as they are.
 */
function coalesceCommands(connection: FabricConnection): void {
  if (!(connection instanceof Redis)) return;
  connection.on("connect", () => coalesceEveryWrite(connection.stream));
}

/** Keys matching a pattern on every primary of a Cluster (SCAN, never KEYS). */
async function countKeys(cluster: Cluster, pattern: string): Promise<number> {
  let count = 0;
  for (const node of cluster.nodes("master")) {
    for await (const keys of node.scanStream({ match: pattern, count: 1000 })) {
      count += (keys as string[]).length;
    }
  }
  return count;
}

/**
 * Opens a sharded subscriber's connection to one Cluster node, with the options of the Cluster's
 * own node connections. Subscriber mode allows no INFO, so no ready check; the subscriber
 * re-subscribes itself after a reconnect (it must know when that is answered).
 */
function shardConnector(config: RedisConfig, connectionName: string): ShardConnector {
  const options = connectionOptions(config);
  return (host, port) =>
    new Redis({
      ...options,
      host,
      port,
      enableReadyCheck: false,
      autoResubscribe: false,
      connectionName,
    });
}

/** What a connection may set beside the common options. */
type ConnectionExtra = Pick<
  RedisOptions,
  | "keyPrefix"
  | "enableReadyCheck"
  | "connectionName"
  | "enableOfflineQueue"
  | "autoResendUnfulfilledCommands"
>;

/**
 * Builds connections from the config: a URL, Sentinels and a primary's name, or a Cluster's
 * seed nodes; `extra` adds per-connection options (key prefix, ready check).
 */
function connectionFactory(config: RedisConfig): (extra: ConnectionExtra) => RedisClient {
  const options = connectionOptions(config);
  const nodes = config.cluster;
  if (nodes === undefined) return (extra) => new Redis({ ...options, ...extra });
  // The Cluster reconnects itself (clusterRetryStrategy) and runs its own ready check
  // (CLUSTER INFO on a normal connection; subscriptions live on a separate one).
  const { retryStrategy, ...nodeOptions } = options;
  return ({ keyPrefix }) =>
    new Cluster(nodes, {
      clusterRetryStrategy: retryStrategy,
      redisOptions: nodeOptions,
      ...(keyPrefix === undefined ? {} : { keyPrefix }),
    });
}

/** ioredis options from the config: a URL, Sentinels and a primary's name, or for a Cluster's nodes. */
function connectionOptions(config: RedisConfig): RedisOptions {
  const common: RedisOptions = {
    // Reconnect forever, backing off to 2 s: the node stays up and recovers when Redis does.
    retryStrategy: (times) => Math.min(times * 100, 2_000),
    maxRetriesPerRequest: 3,
    lazyConnect: false,
    ...(config.username === undefined ? {} : { username: config.username }),
    ...(config.password === undefined ? {} : { password: config.password }),
  };
  if (config.tls) common.tls = tlsOptions(config.tls);
  if (config.cluster) return common;
  if (config.sentinels && config.name) {
    return {
      ...common,
      sentinels: config.sentinels,
      name: config.name,
      ...(config.sentinelPassword === undefined
        ? {}
        : { sentinelPassword: config.sentinelPassword }),
    };
  }
  const url = new URL(config.url ?? "redis://127.0.0.1:6379");
  return {
    ...common,
    host: url.hostname,
    port: Number(url.port || 6379),
    db: Number(url.pathname.slice(1) || 0),
    ...(url.username && config.username === undefined
      ? { username: decodeURIComponent(url.username) }
      : {}),
    ...(url.password && config.password === undefined
      ? { password: decodeURIComponent(url.password) }
      : {}),
    ...(url.protocol === "rediss:" || config.tls
      ? { tls: { servername: url.hostname, ...tlsOptions(config.tls ?? {}) } }
      : {}),
  };
}

/** The files of `redis.tls`, read once at start (paths already checked by the config). */
function tlsOptions(files: NonNullable<RedisConfig["tls"]>): ConnectionOptions {
  const read = (path: string | undefined) => (path === undefined ? undefined : readFileSync(path));
  const ca = read(files.ca);
  const cert = read(files.cert);
  const key = read(files.key);
  return { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) };
}
