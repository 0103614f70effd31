import { EventEmitter } from "node:events";
import type { Cluster, Redis } from "ioredis";
import { asError } from "../errors.js";
import type { Logger } from "../observability/logger.js";

/** What a sharded subscriber tells whoever listens. */
export interface ShardedSubscriberEvents {
  /** Every channel is subscribed on the primary that owns its slot. */
  ready: [];
  /** A channel is no longer subscribed (a connection lost, a slot moved): messages may be missed. */
  close: [];
  /** A message on one of the channels, as mqemitter-redis takes it from a subscriber connection. */
  messageBuffer: [channel: Buffer, payload: Buffer];
}

/** Opens a connection to one Cluster node (its address as the Cluster names it). */
export type ShardConnector = (host: string, port: number) => Redis;

/** One primary's connection and the channels whose slots it owns. */
interface Shard {
  readonly key: string;
  readonly channels: readonly string[];
  readonly connection: Redis;
  subscribed: boolean;
  /** Counts the connection's losses: an SSUBSCRIBE round answered after one is stale. */
  generation: number;
  /** Redis said MOVED: the next topology refresh rebuilds this shard, owner changed or not. */
  moved: boolean;
}

/**
 * This node's subscription on a Redis Cluster: SSUBSCRIBE of a fixed set of shard channels,
 * each on the primary that owns its slot, one connection per primary. Sharded pub/sub keeps a
 * message on its shard (no cluster-bus broadcast), so the nodes' traffic spreads over the
 * primaries.
 *
 * Its own connections rather than ioredis' `shardedSubscribers`: ioredis re-subscribes there
 * without waiting for the answers and says nothing when a shard's connection drops, where this
 * node must know when its subscription is whole again (the pub/sub gap, RedisFabric) and whether
 * Redis cut it alone (a subscription reset). The topology comes from the Cluster that publishes:
 * each slot cache refresh (`refresh`) re-assigns the channels, and a shard whose SSUBSCRIBE was
 * answered MOVED, or whose connection failed, asks for one.
 *
 * It stands in for mqemitter-redis' subscriber connection: mqemitter-redis' per-filter
 * (P)(UN)SUBSCRIBEs are answered at once without Redis (every message of the cluster reaches
 * this node anyway; mqemitter's local matching picks the listeners), and the shard channels'
 * messages are handed to it as `messageBuffer` events.
 */
export class ShardedSubscriber extends EventEmitter<ShardedSubscriberEvents> {
  private readonly shards = new Map<string, Shard>();
  private readonly slotOf: ReadonlyMap<string, number>;
  /** Every channel is subscribed: 'ready' was the last event. */
  private whole = false;
  /**
   * Since the 'ready' before last, no connection failed (a refused reconnect, a reply that did
   * not match) and no channel moved: the loss was Redis closing connections while it stayed up.
   */
  private lostAlone = true;
  private closed = false;
  /**
   * Reading is paused (pauseReading): every shard connection subscribed from now on is paused
   * too, once its SSUBSCRIBEs are answered.
   */
  private readingPaused = false;

  constructor(
    private readonly topology: Cluster,
    private readonly channels: readonly string[],
    slots: readonly number[],
    private readonly connect: ShardConnector,
    private readonly log: Logger,
  ) {
    super();
    this.slotOf = new Map(channels.map((channel, i) => [channel, slots[i] as number]));
    topology.on("refresh", () => this.assign());
  }

  /**
   * Read while 'ready' is emitted: whether the interruption it ends was Redis closing
   * connections while every server stayed up (a cut), not a server lost or a slot moved.
   */
  get interruptedAlone(): boolean {
    return this.lostAlone;
  }

  /** mqemitter-redis' SUBSCRIBE: the channels are fixed, so answered at once. */
  subscribe(...args: unknown[]): Promise<number> {
    return answerAtOnce(args);
  }

  /** mqemitter-redis' PSUBSCRIBE: answered at once. */
  psubscribe(...args: unknown[]): Promise<number> {
    return answerAtOnce(args);
  }

  /** mqemitter-redis' UNSUBSCRIBE: answered at once. */
  unsubscribe(...args: unknown[]): Promise<number> {
    return answerAtOnce(args);
  }

  /** mqemitter-redis' PUNSUBSCRIBE: answered at once. */
  punsubscribe(...args: unknown[]): Promise<number> {
    return answerAtOnce(args);
  }

  /**
   * Stops or restarts reading every shard connection (SubscriptionThrottle, through
   * RedisFabric): what is not read waits in each primary's output buffer for it. Pausing needs
   * the whole subscription (a shard still subscribing must read its answers); true if it is
   * paused. While paused, a shard connection made anew (a slot-cache refresh, a resharding, a
   * reconnect) subscribes, then pauses; one resumed before its answers stays unpaused.
   */
  pauseReading(paused: boolean): boolean {
    if (paused && !this.readingPaused && !this.whole) return false;
    this.readingPaused = paused;
    // Only subscribed ones pause; every one resumes, so none is left paused whatever its state.
    for (const shard of this.shards.values()) {
      if (shard.subscribed || !paused) pauseStream(shard.connection, paused);
    }
    return true;
  }

  /** Whether each shard connection's socket is paused, by primary (for tests). */
  readingState(): Map<string, boolean> {
    return new Map(
      [...this.shards.values()].map((shard) => [
        shard.key,
        shard.connection.stream?.isPaused() ?? false,
      ]),
    );
  }

  /** Closes every shard connection (nothing to wait for: a subscriber keeps no data). */
  async quit(): Promise<void> {
    this.disconnect();
  }

  disconnect(): void {
    this.closed = true;
    for (const shard of [...this.shards.values()]) this.drop(shard);
    this.check();
  }

  /** Places each channel on its slot's primary, as the topology Cluster now knows it. */
  private assign(): void {
    if (this.closed) return;
    const owners = new Map<string, string[]>();
    for (const channel of this.channels) {
      const owner = this.topology.slots[this.slotOf.get(channel) as number]?.[0];
      if (owner === undefined) continue;
      const owned = owners.get(owner);
      if (owned) owned.push(channel);
      else owners.set(owner, [channel]);
    }
    for (const shard of [...this.shards.values()]) {
      const channels = owners.get(shard.key);
      if (channels && !shard.moved && sameChannels(channels, shard.channels)) {
        owners.delete(shard.key);
        continue;
      }
      this.lostAlone = false;
      this.drop(shard);
    }
    for (const [key, channels] of owners) this.open(key, channels);
    this.check();
  }

  private open(key: string, channels: readonly string[]): void {
    const colon = key.lastIndexOf(":");
    const connection = this.connect(key.slice(0, colon), Number(key.slice(colon + 1)));
    const shard: Shard = {
      key,
      channels,
      connection,
      subscribed: false,
      generation: 0,
      moved: false,
    };
    this.shards.set(key, shard);
    connection.on("ready", () => this.subscribeShard(shard));
    connection.on("close", () => {
      shard.generation++;
      shard.subscribed = false;
      this.check();
    });
    connection.on("smessageBuffer", (channel: Buffer, payload: Buffer) =>
      this.emit("messageBuffer", channel, payload),
    );
    // ioredis answers an SSUBSCRIBE's MOVED with this event alone (the command never settles).
    connection.on("moved", () => {
      shard.moved = true;
      this.lostAlone = false;
      this.topology.refreshSlotsCache();
    });
    connection.on("error", (error: Error) => {
      this.lostAlone = false;
      this.log.debug(
        { event: "redis.shard_subscriber_error", shard: key, err: asError(error) },
        "sharded pub/sub connection error",
      );
      // On a live connection an error means its replies no longer match its commands: Redis
      // unsubscribed it from a channel whose slot left that server. Reconnecting re-subscribes
      // (MOVED then finds the new owner). Failed connects retry by themselves.
      if (connection.status === "ready") connection.disconnect(true);
      this.topology.refreshSlotsCache();
    });
  }

  /** SSUBSCRIBEs the shard's channels, one command each (each is its own slot). */
  private subscribeShard(shard: Shard): void {
    const { connection, generation } = shard;
    Promise.all(shard.channels.map((channel) => connection.ssubscribe(channel))).then(
      () => {
        if (generation !== shard.generation || this.shards.get(shard.key) !== shard) return;
        shard.subscribed = true;
        if (this.readingPaused) pauseStream(connection, true);
        this.check();
      },
      () => {
        // Lost before the answers: its next 'ready' starts over.
      },
    );
  }

  private drop(shard: Shard): void {
    this.shards.delete(shard.key);
    shard.connection.removeAllListeners();
    shard.connection.on("error", () => {});
    shard.connection.disconnect();
  }

  private check(): void {
    let covered = 0;
    for (const shard of this.shards.values())
      if (shard.subscribed) covered += shard.channels.length;
    const whole = !this.closed && covered === this.channels.length;
    if (whole === this.whole) return;
    this.whole = whole;
    if (whole) {
      this.emit("ready");
      // The next interruption is judged from here.
      this.lostAlone = true;
    } else {
      this.emit("close");
    }
  }
}

/** Pauses or resumes reading a connection's socket (the one it has now: a reconnect makes another). */
function pauseStream(connection: Redis, paused: boolean): void {
  const stream = connection.stream;
  if (stream === undefined) return;
  if (paused) stream.pause();
  // Only a paused one: resume() would set a stream not yet read by ioredis flowing.
  else if (stream.isPaused()) stream.resume();
}

function sameChannels(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((channel, i) => channel === b[i]);
}

/** Calls a trailing node-style callback (as ioredis does, later) and resolves. */
function answerAtOnce(args: unknown[]): Promise<number> {
  const callback = args[args.length - 1];
  const answered = Promise.resolve(0);
  if (typeof callback === "function") answered.then((count) => callback(null, count));
  return answered;
}
