import persistenceRedis from "aedes-persistence-redis";
import { Redis, type RedisOptions } from "ioredis";
import mqemitterRedis from "mqemitter-redis";
import type { SluiceConfig } from "../config/schema.js";
import type { Logger } from "../observability/logger.js";

type RedisConfig = NonNullable<SluiceConfig["redis"]>;

/** The hash aedes-persistence-redis keeps retained messages in (under the key prefix). */
const RETAINED_HASH = "retained";

/**
 * The Redis side of a cluster node: pub/sub between nodes (mqemitter-redis) and shared state
 * (aedes-persistence-redis: sessions, subscriptions, retained, in-flight, wills), on ioredis
 * connections Sluice builds and watches itself. Its own connections matter: mqemitter-redis's
 * default ones run ioredis' ready check (INFO) on the subscriber connection, which Redis
 * refuses in subscriber mode and which surfaced as an unhandled error (ioredis issue 2037; seen
 * here on the first try with aedes 1.2).
 */
export class RedisFabric {
  readonly mq: unknown;
  /** The connection for Sluice's own keys (the key prefix applies). */
  readonly state: Redis;
  readonly persistence: unknown;
  private readonly connections: Redis[];
  private lastRetainedCount = 0;
  private readonly ready = new Set<Redis>();
  private up = false;
  private readonly upWaiters = new Set<() => void>();

  constructor(
    config: RedisConfig,
    private readonly log: Logger,
    private readonly onStateChange: (up: boolean) => void,
  ) {
    const base = connectionOptions(config);
    const state = new Redis({ ...base, keyPrefix: config.keyPrefix });
    const publisher = new Redis(base);
    // Subscriber mode allows no INFO, so no ready check on this one.
    const subscriber = new Redis({ ...base, enableReadyCheck: false });
    this.state = state;
    this.connections = [state, publisher, subscriber];
    for (const connection of this.connections) this.watch(connection);
    this.persistence = persistenceRedis({ conn: state });
    const mq = mqemitterRedis({ pubConn: publisher, subConn: subscriber });
    // mqemitter-redis re-emits connection errors on its `state` emitter; without a listener
    // there, a failed reconnect during a Redis outage throws and takes the node down. The
    // outage itself is reported once per state change by update().
    const emitterState = (mq as unknown as { state?: NodeJS.EventEmitter }).state;
    if (!emitterState)
      throw new TypeError("mqemitter-redis has no state emitter: cannot guard its errors");
    emitterState.on("error", (error: Error) =>
      log.debug({ event: "redis.emitter_error", err: error.message }, "redis emitter error"),
    );
    this.mq = mq;
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
   * Retained messages in Redis (one hash; HLEN is O(1)). While Redis is down the last known
   * count is returned rather than making a scrape wait or fail.
   */
  async retainedCount(): Promise<number> {
    if (!this.up) return this.lastRetainedCount;
    try {
      this.lastRetainedCount = await this.state.hlen(RETAINED_HASH);
    } catch {
      // keep the last known value
    }
    return this.lastRetainedCount;
  }

  async close(): Promise<void> {
    await Promise.all(this.connections.map((c) => c.quit().catch(() => c.disconnect())));
  }

  private watch(connection: Redis): void {
    connection.on("ready", () => {
      this.ready.add(connection);
      this.update();
    });
    const lost = (): void => {
      this.ready.delete(connection);
      this.update();
    };
    connection.on("close", lost);
    connection.on("end", lost);
    // ioredis emits 'error' on every failed reconnect: state changes are logged in update().
    connection.on("error", () => {});
    // The subscriber has no ready check, so 'connect' is its ready.
    if (connection.options.enableReadyCheck === false) {
      connection.on("connect", () => {
        this.ready.add(connection);
        this.update();
      });
    }
  }

  private update(): void {
    const up = this.ready.size === this.connections.length;
    if (up === this.up) return;
    this.up = up;
    if (up) this.log.info({ event: "redis.up" }, "redis reachable");
    else this.log.error({ event: "redis.down" }, "redis unreachable: not ready for new clients");
    this.onStateChange(up);
    if (up) {
      for (const waiter of this.upWaiters) waiter();
      this.upWaiters.clear();
    }
  }
}

/** ioredis options from the config: a URL, or Sentinels and a primary's name. */
function connectionOptions(config: RedisConfig): RedisOptions {
  const common: RedisOptions = {
    // Reconnect forever, backing off to 2 s: the node stays up and recovers when Redis does.
    retryStrategy: (times) => Math.min(times * 100, 2_000),
    maxRetriesPerRequest: 3,
    lazyConnect: false,
    ...(config.username === undefined ? {} : { username: config.username }),
    ...(config.password === undefined ? {} : { password: config.password }),
  };
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
    ...(url.protocol === "rediss:" ? { tls: { servername: url.hostname } } : {}),
  };
}
