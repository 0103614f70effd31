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
 * waited for it: the client sends again (ack-after-durable, as when Redis is unreachable).
 */
export class ReplicaAcks extends EventEmitter<ReplicaAckEvents> {
  private readonly batches = new TurnBatches<undefined, void>((call) => this.confirm(call), {
    paced: true,
  });
  /** Whether the last confirmation failed: the log says so once per change. */
  private short = false;

  constructor(
    private readonly connection: Redis,
    private readonly options: ReplicaAckOptions,
    private readonly log: Logger,
  ) {
    super();
    connection.on("ready", () => void this.checkReplicas());
  }

  /**
   * Resolves once every write Redis answered this node before the call is on the replicas;
   * rejects (ReplicaShortfall, or the connection's error) when that is not known in time.
   */
  confirmed(): Promise<void> {
    return this.batches.add("", undefined);
  }

  /**
   * As confirmed(), for what goes out confirmed or not: at once while confirmations fail (too
   * few replicas), rather than after `timeoutMs` each time; never rejects.
   */
  confirmedUnlessShort(): Promise<void> {
    if (this.short) return Promise.resolve();
    return this.confirmed().catch(() => {});
  }

  private confirm(call: Array<Waiting<undefined, void>>): Promise<void> {
    const { replicas, timeoutMs } = this.options;
    const write = this.connection.set(REPLICA_ACK_KEY, "1");
    const wait = this.connection.wait(replicas, timeoutMs);
    return Promise.all([write, wait]).then(
      ([, confirmed]) => {
        if (confirmed >= replicas) {
          this.settled(false, call.length);
          for (const waiting of call) waiting.resolve();
        } else this.fail(call, new ReplicaShortfall(confirmed, replicas));
      },
      (error: unknown) => this.fail(call, error),
    );
  }

  private fail(call: Array<Waiting<undefined, void>>, error: unknown): void {
    this.settled(true, call.length);
    for (const waiting of call) waiting.reject(error);
  }

  private settled(short: boolean, count: number): void {
    if (short) this.emit("missed", count);
    if (short === this.short) return;
    this.short = short;
    const { replicas, timeoutMs } = this.options;
    if (short) {
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
