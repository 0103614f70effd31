import { createHash, randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import { AttemptDeliveries, FIRST_ATTEMPT, LATER_ATTEMPT } from "./attempt-deliveries.js";
import { RedisScripts } from "./redis-scripts.js";
import type { ReplicaAcks } from "./replica-acks.js";

/** How an inbound QoS 2 record that is reserved, not published, starts (`pending:<token>`). */
export const PENDING = "pending:";
const PENDING_BYTES = Buffer.from(PENDING);

/**
 * The field beside a reserved packet identifier's record that says its message is in the offline
 * sessions' queues: a take-over queues it no second time (enqueue-2.lua).
 */
export function queuedField(messageId: string | number): string {
  return `${messageId}:queued`;
}

/**
 * The field beside a reserved packet identifier's record that lists the shared groups its
 * message was assigned in (`,<group id>,...`): a take-over assigns it in no group twice
 * (cluster/share-lua/share-assign-4.lua).
 */
export function sharedField(messageId: string | number): string {
  return `${messageId}:shared`;
}

/**
 * What tells a resend of a message from another message under the same packet identifier (a
 * client that lost its state reuses identifiers): its topic and payload, hashed.
 */
export function messageDigest(topic: string, payload: Buffer): string {
  return createHash("sha1").update(topic).update("\0").update(payload).digest("base64url");
}

/** Whether a stored inbound QoS 2 record is a reservation (a published one is a packet). */
export function isPending(record: Buffer): boolean {
  return record.length >= PENDING_BYTES.length && record.subarray(0, 8).equals(PENDING_BYTES);
}

/** A client's inbound QoS 2 packet identifier, reserved before its message is published. */
export interface Reservation {
  clientId: string;
  /** The session's inbound QoS 2 hash, as Redis names it (key prefix included). */
  key: string;
  /** The packet identifier. */
  field: string;
  /** The record while reserved: `pending:<token>/<origin>/<digest>`. */
  pending: string;
  /**
   * The id every attempt of the message is published under: the first attempt's token, kept by
   * a resend that takes the reservation over.
   */
  origin: string;
  /** Whether this attempt took over another's reservation: it may be a second copy. */
  again: boolean;
  /** The record once published: the packet, as the PUBREC's duplicate check reads it. */
  published: Buffer;
  /** Set once the publish script ran (now, or earlier: a resend found it done). */
  done: boolean;
  /**
   * The replica confirmations' epoch (replica-acks.ts) its writes were made in: taken before
   * the reservation, then again as the publish script goes. Its PUBREC needs a confirmation in
   * that epoch.
   */
  epoch: number;
}

/** The emitter's side: the publish of a reserved message, by its script. */
export interface ReservedPublisher {
  /**
   * Runs the publish script; `answered` gets Redis' error, or whether the message is published
   * (now or before) or not (another connection holds the identifier).
   */
  publish(
    reservation: Reservation,
    channel: string,
    envelope: Buffer,
    answered: (error: Error | undefined, published: boolean) => void,
  ): void;
}

/**
 * Inbound QoS 2 messages published exactly once across nodes (issue 17): the packet identifier
 * is reserved in Redis before the message is published (reserve-incoming-1.lua), the PUBLISH
 * runs only while the reservation is this connection's and marks it published in the same
 * script (publish-reserved-1.lua), and a resend through another connection or node takes a
 * reservation over. Its answer may be lost (a failover), so this node cannot know whether its
 * own PUBLISH ran: the message skips local-first delivery and reaches this node's subscribers
 * through Redis like any other node's (its envelope id does not carry the echo prefix).
 *
 * The persistence reserves (incomingGetPacket) and the emitter publishes; aedes hands the
 * emitter a new packet object, which shares the client's payload Buffer: the reservation is
 * found by that Buffer and the client id. Single Redis and Sentinel only: on a Redis Cluster a
 * message's shard channel and its publisher's session are in different slots.
 *
 * Across a failover: the PUBLISH reaches subscribers at once, its mark reaches the replica
 * later, so a primary that dies in between leaves the promoted replica without the mark, and
 * the client's resend is published again. So with `redis.replicaAcks`, the publish script runs
 * only once the replicas hold what this node wrote before it (the reservation, the offline
 * sessions' queued copies); a resend then finds the reservation, keeps its origin and
 * publishes as a later attempt, which each node delivers only to the connections it did not
 * hand the first to (attempt-deliveries.ts).
 */
export class InboundReservations {
  private readonly prefix = `${randomBytes(6).toString("base64url")}.`;
  private sequence = 0;
  private readonly held = new WeakMap<Buffer, Reservation>();
  /** Which connections this node handed each attempt to. */
  readonly attempts = new AttemptDeliveries();
  /** The last publish waiting for its confirmation: publishes go in the order they came. */
  private confirmedTail: Promise<void> = Promise.resolve();

  constructor(private readonly replicaAcks?: ReplicaAcks) {}

  /** A token unique to this reservation. */
  nextToken(): string {
    return `${this.prefix}${(++this.sequence).toString(36)}`;
  }

  /**
   * The envelope id of an attempt: not this node's echo prefix (the echo is delivered), unique
   * per attempt (a node's seen-id check drops only a copy of the same attempt), naming the
   * origin, and whether the attempt may be a second copy.
   */
  envelopeId(reservation: Reservation): string {
    const { origin, again, pending } = reservation;
    if (!again) return `${FIRST_ATTEMPT}${origin}`;
    const token = pending.slice(PENDING.length, pending.indexOf("/"));
    return `${LATER_ATTEMPT}${origin}/${token}`;
  }

  /**
   * Runs `publish` once the replicas hold what this node wrote for the reservation (at once
   * without replica acknowledgements), publishes in call order. `failed` instead when that is
   * not known: too few replicas confirmed in time (the primary may be one Sentinel has just
   * replaced: what it takes is lost when it is demoted), or a Redis connection was lost since
   * the reservation, so its writes (the reservation, the queued copies, the group assignments)
   * may be gone with a primary while the publish would reach the new one.
   */
  afterConfirmed(
    reservation: Reservation,
    publish: () => void,
    failed: (error: Error) => void,
  ): void {
    const acks = this.replicaAcks;
    if (acks === undefined) {
      publish();
      return;
    }
    const confirmed = acks.confirmed(reservation.epoch);
    const published = (): void => {
      reservation.epoch = acks.epoch;
      publish();
    };
    // publish and failed report to their own callback; a throw must not stop those after it.
    this.confirmedTail = this.confirmedTail
      .then(() => confirmed)
      .then(published, (error: unknown) => failed(asError(error)))
      .catch(() => {});
  }

  hold(payload: Buffer, reservation: Reservation): void {
    this.held.set(payload, reservation);
  }

  /** The reservation a message on the emitter, or a PUBREC's packet, was reserved under. */
  of(clientId: unknown, qos: unknown, payload: unknown): Reservation | undefined {
    if (qos !== 2 || !Buffer.isBuffer(payload)) return undefined;
    const reservation = this.held.get(payload);
    return reservation?.clientId === clientId ? reservation : undefined;
  }

  /**
   * The reservation of a packet aedes queues for offline sessions (before the emitter sees it,
   * so before it names its client): found by its payload Buffer alone.
   */
  ofQueued(qos: unknown, payload: unknown): Reservation | undefined {
    return qos === 2 && Buffer.isBuffer(payload) ? this.held.get(payload) : undefined;
  }

  release(payload: Buffer): void {
    this.held.delete(payload);
  }
}

/**
 * The publish script (`publish-lua/`), on the fabric's publisher connection, once the
 * reservations' confirmation allows it.
 */
export function reservedPublisher(
  publisher: Redis,
  reservations: InboundReservations,
): ReservedPublisher {
  const scripts = new RedisScripts<"publishReserved">(
    publisher,
    new URL("./publish-lua/", import.meta.url),
  );
  return {
    publish(reservation, channel, envelope, answered) {
      const { key, field, pending, published } = reservation;
      reservations.afterConfirmed(
        reservation,
        () => {
          scripts
            .run("publishReserved", [key], [field, pending, channel, envelope, published])
            .then(
              (outcome) => {
                reservation.done = outcome !== 0;
                answered(undefined, reservation.done);
              },
              (error: Error) => answered(error, false),
            );
        },
        (error) => answered(error, false),
      );
    },
  };
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
