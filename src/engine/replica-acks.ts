import { EventEmitter } from "node:events";
import type { Redis } from "ioredis";
import type { Logger } from "../observability/logger.js";
import { TurnBatches, type Waiting } from "./turn-batches.js";

export interface ReplicaAckOptions {
  /** Replicas that must hold a write before what depends on it is acknowledged (> 0). */
  replicas: number;
  /** How long WAIT waits for them. */
  timeoutMs: number;
}

/** What a confirmation writes (under the key prefix): a write of its own, for WAIT to wait on. */
export const REPLICA_ACK_KEY = "replica-acks";

/** Fewer replicas than asked confirmed in time: whatever waited on it is not acknowledged. */
export class ReplicaShortfall extends Error {
  constructor(
    readonly confirmed: number,
    readonly wanted: number,
  ) {
    super(`${confirmed} of ${wanted} Redis replicas confirmed the write in time`);
    this.name = "ReplicaShortfall";
  }
}

/**
 * The node lost a Redis connection between a write and the confirmation asked for it: the
 * write may have been answered by a primary that is gone, and a confirmation from whichever
 * server answers now says nothing of it.
 */
export class ReplicaEpochChanged extends Error {
  constructor() {
    super("a Redis connection was lost since the write: its replication cannot be confirmed");
    this.name = "ReplicaEpochChanged";
  }
}

export interface ReplicaAckEvents {
  /** `count` waits on a confirmation that failed: too few replicas in time, or the connection. */
  missed: [count: number];
}

/**
 * Confirms that what Redis has answered this node so far is on `replicas` replicas, so that an
 * acknowledgement sent after it survives a Sentinel failover (Redis replicates asynchronously:
 * a promoted replica lacks whatever the dead primary had not sent it yet).
 *
 * On a connection of its own (WAIT blocks the connection it is sent on: on the publisher or
 * state connection it would hold back every PUBLISH, lease renewal and fence probe behind it),
 * each confirmation is a write and a WAIT sent together; WAIT waits for the replication offset
 * of that write, which is past every write Redis answered before it, on any connection.
 * Confirmations asked in one turn share one WAIT, and while one is out the next gathers.
 *
 * The connection neither queues commands while it is down nor sends again what it had sent
 * when it broke: a WAIT answered by the primary that replaced a dead one would confirm nothing
 * of what the dead one lost. Such a confirmation fails, and so does the acknowledgement that
 * waited for it: the client sends again (ack-after-durable, as when Redis is unreachable). For
 * the same reason a confirmation asked after a connection loss does not cover writes made
 * before it (`epoch`): a QoS 2 message's writes span several round trips, and a failover
 * between them must not leave its acknowledgement confirmed by the new primary alone.
 */
export class ReplicaAcks extends EventEmitter<ReplicaAckEvents> {
  /** Each waiting confirmation carries the epoch its writes were made in. */
  private readonly batches = new TurnBatches<number, void>((call) => this.confirm(call), {
    paced: true,
  });
  /** Whether the last confirmation failed: the log says so once per change. */
  private missing = false;
  /** Whether the last answer had fewer replicas than asked (not a lost connection). */
  private short = false;
  private lost = 0;
  private readonly firstWrites = new WeakMap<object, number>();
  /** Fails the confirmation awaiting its answer: its connection closed. */
  private failInFlight: ((error: Error) => void) | undefined;

  constructor(
    private readonly connection: Redis,
    private readonly options: ReplicaAckOptions,
    private readonly log: Logger,
  ) {
    super();
    connection.on("ready", () => void this.checkReplicas());
    connection.on("close", () => {
      this.connectionLost();
      // ioredis drops the commands a closed connection had sent, unanswered, when it is not to
      // send them again and reconnects at once: the confirmation would wait forever, and every
      // one after it behind it.
      this.failInFlight?.(new Error("the Redis connection closed before the replicas confirmed"));
    });
  }

  /**
   * Counts the node's Redis connection losses (this one's, and those the fabric reports): a
   * write made before a loss may have gone to a primary that is gone (a failover), and no
   * confirmation after it covers that write. Take it before the first write an acknowledgement
   * depends on, and confirm with it.
   */
  get epoch(): number {
    return this.lost;
  }

  /** One of the node's Redis connections closed. */
  connectionLost(): void {
    this.lost++;
  }

  /**
   * Notes the epoch of a message's first write (its retained copy, its offline sessions'
   * queued copies), made before it is published: its acknowledgement is confirmed in it.
   */
  writing(message: object): void {
    if (!this.firstWrites.has(message)) this.firstWrites.set(message, this.lost);
  }

  /** The epoch of a message's first write (writing()), or now. */
  epochOf(message: object): number {
    return this.firstWrites.get(message) ?? this.lost;
  }

  /**
   * Resolves once every write Redis answered this node before the call is on the replicas;
   * rejects (ReplicaShortfall, the connection's error, or ReplicaEpochChanged: a connection was
   * lost since `since`, the epoch taken before the writes) when that is not known in time.
   */
  confirmed(since = this.lost): Promise<void> {
    if (since !== this.lost) return Promise.reject(new ReplicaEpochChanged());
    return this.batches.add("", since);
  }

  /**
   * As confirmed(), for what must go out however long replicas are short: at once while they
   * are (too few confirmed in time), rather than after `timeoutMs` each time. Rejects only when
   * the writes cannot be known to be where the next command goes (a lost connection, or one
   * lost since `since`). Not for a first acknowledgement: a primary that has just lost its
   * replica may be one Sentinel has already replaced, and what it takes is lost when it is
   * demoted.
   */
  confirmedUnlessShort(since = this.lost): Promise<void> {
    if (since !== this.lost) return Promise.reject(new ReplicaEpochChanged());
    if (this.short) return Promise.resolve();
    return this.confirmed(since).catch((error: unknown) => {
      if (!(error instanceof ReplicaShortfall)) throw error;
    });
  }

  private confirm(call: Array<Waiting<number, void>>): Promise<void> {
    const { replicas, timeoutMs } = this.options;
    const epoch = this.lost;
    const stale = call.filter((waiting) => waiting.item !== epoch);
    if (stale.length > 0) {
      this.fail(stale, new ReplicaEpochChanged());
      call = call.filter((waiting) => waiting.item === epoch);
      if (call.length === 0) return Promise.resolve();
    }
    const write = this.connection.set(REPLICA_ACK_KEY, "1");
    const wait = this.connection.wait(replicas, timeoutMs);
    const closed = new Promise<never>((_, reject) => {
      this.failInFlight = reject;
    });
    return Promise.race([Promise.all([write, wait]), closed])
      .then(
        ([, confirmed]) => {
          this.short = confirmed < replicas;
          if (confirmed >= replicas) {
            this.settled(false, call.length);
            for (const waiting of call) waiting.resolve();
          } else this.fail(call, new ReplicaShortfall(confirmed, replicas));
        },
        (error: unknown) => this.fail(call, error),
      )
      .finally(() => {
        this.failInFlight = undefined;
      });
  }

  private fail(call: Array<Waiting<number, void>>, error: unknown): void {
    this.settled(true, call.length);
    for (const waiting of call) waiting.reject(error);
  }

  private settled(missing: boolean, count: number): void {
    if (missing) this.emit("missed", count);
    if (missing === this.missing) return;
    this.missing = missing;
    const { replicas, timeoutMs } = this.options;
    if (missing) {
      this.log.warn(
        { event: "redis.replica_acks_missed", replicas, timeoutMs },
        "Redis replicas did not confirm writes in time: QoS 1/2 acknowledgements withheld",
      );
    } else {
      this.log.info({ event: "redis.replica_acks_confirmed", replicas }, "Redis replicas confirm");
    }
  }

  /** At each (re)connection: a primary with fewer replicas than asked acknowledges nothing. */
  private async checkReplicas(): Promise<void> {
    try {
      const info = await this.connection.info("replication");
      const connected = Number(/^connected_slaves:(\d+)/m.exec(info)?.[1] ?? 0);
      const { replicas } = this.options;
      if (connected < replicas) {
        this.log.warn(
          { event: "redis.replicas_short", connected, replicas },
          "Redis has fewer replicas than redis.replicaAcks.replicas: QoS 1/2 acknowledgements wait until enough confirm",
        );
      }
    } catch (error) {
      this.log.debug({ event: "redis.replicas_unknown", err: error }, "INFO replication failed");
    }
  }
}
