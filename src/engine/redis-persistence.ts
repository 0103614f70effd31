import { Readable } from "node:stream";
import { setTimeout as pause } from "node:timers/promises";
import { Cluster, type Redis } from "ioredis";
import msgpack from "msgpack-lite";
import { QlobberTrue } from "qlobber";
import QlobberSub, { type TrieSubscription } from "qlobber/aedes/qlobber-sub.js";
import type { Logger } from "../observability/logger.js";
import { escapeGlob, PersistenceKeys } from "../redis/redis-keys.js";
import {
  InboundReservations,
  isPending,
  messageDigest,
  queuedField,
  sharedField,
} from "./inbound-qos2.js";
import { migrateLegacyLayout } from "./legacy-layout-migration.js";
import {
  type ClientRef,
  originOfSharedRef,
  Packet,
  type QueueLimits,
  type StoredPacket,
  type SubscriptionRequest,
  TOPIC_MATCHING,
} from "./persistence-types.js";
import { RedisScripts } from "./redis-scripts.js";
import { type ReplicaAcks, ReplicaEpochChanged } from "./replica-acks.js";
import { inResendOrder } from "./resend-order.js";
import { type BroadcastBroker, SubscriptionBroadcast } from "./subscription-broadcast.js";
import { bySession, CONNECT_LINGER_MS, TurnBatches, type Waiting } from "./turn-batches.js";

/** The broker as the persistence sees it: broadcasts, and whether anyone hears acks. */
export interface PersistenceBroker extends BroadcastBroker {
  listenerCount(event: string): number;
}

export interface RedisPersistenceOptions extends QueueLimits {
  /** A connection with the key prefix set (ioredis `keyPrefix`). */
  db: Redis | Cluster;
  log: Logger;
  /**
   * Replica confirmations (`redis.replicaAcks`): a write an acknowledgement depends on is
   * confirmed before the call that made it resolves.
   */
  replicaAcks?: ReplicaAcks;
}

/** Stored sessions read per round trip when the subscriptions are (re)loaded. */
const LOAD_BATCH = 1000;
const RELEASED = "rel:";
/**
 * Deliveries PUBREC'd that a session remembers (shared ones, and inbound QoS 2 messages' origins):
 * far more than can be in flight, or acknowledged and not yet forgotten by their group, or
 * resent by their publishers after a failover, when the session joins again.
 */
const RELEASED_CAP = 256;
/** How an inbound QoS 2 message's origin is noted in a session's released list. */
const RELEASED_ORIGIN_CODE = "@".charCodeAt(0);
/**
 * How long an inbound QoS 2 id's record is written (and confirmed) again while Redis fails, and
 * how often: the message is published by then, and without the record the client's resend
 * would be published again. A reserved id's record is written by its publish script
 * (inbound-qos2.ts): only its confirmation is retried.
 */
const INCOMING_STORE_RETRY_MS = 15_000;
const INCOMING_STORE_PAUSE_MS = 200;

interface Delivery {
  clientId: string;
  messageId: number;
  ref: string;
}

interface Acknowledgement {
  clientId: string;
  messageId: number;
}

/** A queued message; an inbound QoS 2 one with the origin its attempts are published under. */
type QueuedPacket = StoredPacket & { origin?: string };

/** An inbound QoS 2 packet identifier to reserve (reserve-incoming-1.lua). */
interface IncomingReservation {
  clientId: string;
  messageId: number;
  token: string;
  /** Of topic and payload: a resend keeps the origin of a reservation it takes over. */
  digest: string;
}

/**
 * A clean session's PUBACK or PUBCOMP: aedes never stores a clean session's deliveries (it
 * writes them straight out), so Redis holds nothing to clear and the round trip is skipped
 * (the subscriber's next packet waits for it). A stale queue that a clean session inherits is
 * cleared with the stored packets themselves (aedes' emptyQueue: PUBLISH or PUBREL records).
 */
function isCleanAcknowledgement(client: ClientRef, packet: { cmd?: string }): boolean {
  return client.clean === true && (packet.cmd === "puback" || packet.cmd === "pubcomp");
}

/**
 * aedes' persistence on Redis (a single Redis, Sentinel, or a Redis Cluster): retained
 * messages, sessions' subscriptions, capped queues with their in-flight state, inbound QoS 2
 * packets, and wills. Each client's keys share one hash slot and every multi-key change to them
 * is one script (`lua/`), so it is atomic on a Cluster too. Every node also keeps all QoS 1/2
 * subscriptions of persistent sessions in memory (what aedes asks on each publish), loaded at
 * start and kept current by broadcasts between nodes. Layout: docs/clustering.md.
 */
export class RedisPersistence {
  private readonly db: Redis | Cluster;
  private readonly clustered: boolean;
  private readonly keys: PersistenceKeys;
  private readonly scripts: RedisScripts;
  private trie = new QlobberSub(TOPIC_MATCHING);
  /** While the subscriptions are read again: the trie being filled, also fed broadcasts. */
  private reloading: QlobberSub | undefined;
  private broker: PersistenceBroker | undefined;
  private broadcast: SubscriptionBroadcast | undefined;
  private readonly deliveries = new TurnBatches<Delivery, void>((call) =>
    this.recordDeliveries(call),
  );
  private readonly acks = new TurnBatches<Acknowledgement, StoredPacket | undefined>((call) =>
    this.acknowledge(call),
  );
  /** Queues resent at CONNECT, read for a whole turn in one script (one per session on a Cluster). */
  private readonly queueReads = new TurnBatches<string, SessionQueue>(
    (call) => this.readQueues(call),
    { paced: true, lingerMs: CONNECT_LINGER_MS },
  );
  /** Per connection (aedes' client), what readAhead() read of its session. */
  private readonly readAheads = new WeakMap<ClientRef, Promise<SessionRead>>();
  /**
   * Connections whose claim found no other of their id (firstOwner), with their session's read:
   * the CONNECT's last steps skip what it shows holds nothing (inbound QoS 2 packets, the queue).
   */
  private readonly firstOwners = new WeakMap<ClientRef, Promise<SessionRead>>();
  /** The stored PUBRELs a resuming connection is sent (their packet ids), until they are. */
  private readonly resumedPubrels = new WeakMap<ClientRef, Set<number>>();
  /** Inbound QoS 2 state cleared for a whole turn in one DEL (per session on a Cluster). */
  private readonly incomingCleans = new TurnBatches<string, void>(
    (call) => this.deleteIncoming(call),
    { paced: true, lingerMs: CONNECT_LINGER_MS },
  );
  /** Exact filters' retained messages, read for a whole turn in one HMGET (single Redis). */
  private readonly retainedReads = new TurnBatches<string, Buffer | null>((call) =>
    this.readRetained(call),
  );
  /**
   * Inbound QoS 2 packet identifiers reserved before their messages are published (none on a
   * Cluster: inbound-qos2.ts); the emitter publishes them.
   */
  readonly inboundQos2: InboundReservations | undefined;
  /** Reservations of a turn in one script. */
  private readonly reservations = new TurnBatches<IncomingReservation, Buffer | null>((call) =>
    this.reserveIncoming(call),
  );
  private destroyed = false;

  constructor(private readonly options: RedisPersistenceOptions) {
    this.db = options.db;
    this.clustered = options.db instanceof Cluster;
    this.keys = new PersistenceKeys(options.db.options.keyPrefix ?? "");
    this.scripts = new RedisScripts(options.db);
    this.inboundQos2 = this.clustered ? undefined : new InboundReservations(options.replicaAcks);
  }

  async setup(broker: PersistenceBroker): Promise<void> {
    this.broker = broker;
    await migrateLegacyLayout(this.db, this.options.log);
    this.broadcast = new SubscriptionBroadcast(broker, () =>
      this.reloading === undefined ? [this.trie] : [this.trie, this.reloading],
    );
    // Listening first: a change made while the stored ones are read is not missed.
    await this.broadcast.start();
    await this.loadSubscriptions(this.trie);
  }

  /**
   * Reads every stored subscription again into a fresh trie, which then replaces the current
   * one: after a pub/sub gap, this node may have missed other nodes' broadcasts (additions and
   * removals). Broadcasts heard meanwhile go to both. Resolves with the subscriptions read.
   */
  async resyncSubscriptions(): Promise<number> {
    const fresh = new QlobberSub(TOPIC_MATCHING);
    this.reloading = fresh;
    try {
      const count = await this.loadSubscriptions(fresh);
      if (this.reloading === fresh) this.trie = fresh;
      return count;
    } finally {
      if (this.reloading === fresh) this.reloading = undefined;
    }
  }

  async storeRetained(packet: StoredPacket): Promise<void> {
    this.options.replicaAcks?.writing(packet);
    const topic = packet.topic as string;
    const clear = packet.payload === undefined || packet.payload.length === 0;
    if (this.clustered) {
      const key = this.keys.retainedTopic(topic);
      await (clear ? this.db.del(key) : this.db.set(key, msgpack.encode(packet)));
    } else {
      const hash = this.keys.retainedHash;
      await (clear ? this.db.hdel(hash, topic) : this.db.hset(hash, topic, msgpack.encode(packet)));
    }
  }

  createRetainedStreamCombi(filters: readonly string[]): Readable {
    if (!this.clustered && filters.every((filter) => wildcardPosition(filter) === -1))
      return this.exactRetained(filters);
    return Readable.from(this.retainedMatching(filters));
  }

  createRetainedStream(filter: string): Readable {
    return this.createRetainedStreamCombi([filter]);
  }

  async addSubscriptions(client: ClientRef, subs: readonly SubscriptionRequest[]): Promise<void> {
    if (subs.length === 0) return;
    const fields: Array<string | Buffer> = [];
    for (const sub of subs) fields.push(sub.topic, msgpack.encode(definedFields(sub)));
    // The index first (same write): a crash between the two leaves an index entry naming no
    // subscriptions, which loading skips; the other order could hide a session from it.
    await Promise.all([
      this.db.sadd(this.keys.subscribedClients, client.id),
      this.db.hset(this.keys.subscriptions(client.id), ...fields),
    ]);
    // The SUBACK: a persistent session's messages are queued by these subscriptions. Waited
    // for, not required: short of replicas, persistent sessions still subscribe.
    if (client.clean === false) await this.replicated().catch(() => {});
    await this.liveBroadcast().added(client.id, subs);
  }

  async removeSubscriptions(client: ClientRef, filters: readonly string[]): Promise<void> {
    if (filters.length > 0) {
      const emptied = await this.scripts.run("removeSubscriptions", this.sessionKeys(client.id), [
        ...filters,
      ]);
      // After the session's keys are gone: a crash in between leaves an index entry that
      // names nothing (skipped, see addSubscriptions).
      if (emptied === 1) await this.db.srem(this.keys.subscribedClients, client.id);
    }
    await this.liveBroadcast().removed(client.id, filters);
  }

  /**
   * Reads now what aedes asks of these connections' stored sessions as their CONNECTs go on:
   * their subscriptions (resumed, or removed for a clean session) and whether this node holds a
   * will of each (deleted before a new one is stored). Called with the client-id claims they go
   * with, in the same turn: claims and reads share one round trip, in one script each (per
   * session on a Cluster). Kept per connection: aedes asks with the same client object.
   */
  readAhead(clients: readonly ClientRef[]): void {
    const calls = new Map<string, ClientRef[]>();
    for (const client of clients) {
      const call = this.callOf(client.id);
      const list = calls.get(call);
      if (list === undefined) calls.set(call, [client]);
      else list.push(client);
    }
    for (const group of calls.values()) {
      const reads = this.readSessions(group.map((client) => client.id));
      group.forEach((client, i) => {
        const read = reads.then((sessions) => sessions[i] as SessionRead);
        // Unused when the CONNECT is refused; whoever uses it hears its failure.
        read.catch(() => {});
        this.readAheads.set(client, read);
      });
    }
  }

  async subscriptionsByClient(client: ClientRef): Promise<SubscriptionRequest[]> {
    const stored = await this.storedSubscriptions(client);
    return Object.values(stored).map((value) => msgpack.decode(value) as SubscriptionRequest);
  }

  async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    const clientsCount = await this.db.scard(this.keys.subscribedClients);
    return { subsCount: this.trie.subscriptionsCount, clientsCount };
  }

  async subscriptionsByTopic(topic: string): Promise<TrieSubscription[]> {
    return this.trie.match(topic);
  }

  /** Resolves with the filters the session held. */
  async cleanSubscriptions(client: ClientRef): Promise<string[]> {
    const filters = Object.keys(await this.storedSubscriptions(client));
    if (filters.length > 0) await this.removeSubscriptions(client, filters);
    return filters;
  }

  /**
   * The claim found no connection of this id anywhere. On a single Redis (one connection: the
   * read went after the claim) whatever an earlier connection wrote was written before its owner
   * entry went, so the read saw it, and nothing else writes the session's inbound QoS 2 packets;
   * its queue only fills through its stored subscriptions, which the read shows too.
   */
  firstOwner(client: ClientRef): void {
    const read = this.readAheads.get(client);
    if (read !== undefined && !this.clustered) this.firstOwners.set(client, read);
  }

  async outgoingEnqueue(sub: { clientId: string }, packet: StoredPacket): Promise<void> {
    await this.outgoingEnqueueCombi([sub], packet);
  }

  /**
   * One script per message (per session on a Cluster, all sent in one write): it stores the
   * message in each session's slot (so a message queued for N sessions is stored N times) and
   * trims each queue to its cap.
   */
  async outgoingEnqueueCombi(
    subs: ReadonlyArray<{ clientId: string }>,
    packet: StoredPacket,
  ): Promise<void> {
    if (subs.length === 0) return;
    this.options.replicaAcks?.writing(packet);
    const ref = refOf(packet);
    // Reserved (never on a Cluster: one call): queued once, whichever connection publishes it.
    const reserved = this.inboundQos2?.ofQueued(packet.qos, packet.payload);
    // With its origin: a session that gets it from its queue skips later attempts of it.
    const stored: QueuedPacket = new Packet(packet);
    if (reserved !== undefined) stored.origin = reserved.origin;
    const encoded = msgpack.encode(stored);
    const { maxQueuedPerClient, onQueueFull } = this.options;
    const calls = new Map<string, string[]>();
    for (const { clientId } of subs) {
      const call = this.callOf(clientId);
      const list = calls.get(call);
      if (list === undefined) calls.set(call, [clientId]);
      else list.push(clientId);
    }
    const marker =
      reserved === undefined
        ? []
        : [this.keys.incoming(reserved.clientId), this.keys.incoming(reserved.clientId)];
    await Promise.all(
      [...calls.values()].map(async (clientIds) => {
        const keys = [
          ...marker,
          ...clientIds.flatMap((id) => [this.keys.queue(id), this.keys.packets(id)]),
        ];
        const args: Array<string | number | Buffer> = [maxQueuedPerClient, ref, encoded];
        if (reserved !== undefined) {
          args.push(reserved.field, queuedField(reserved.field), reserved.pending);
        }
        const dropped = (await this.scripts.run("enqueue", keys, args)) as number[];
        clientIds.forEach((clientId, i) => {
          const count = dropped[i] ?? 0;
          if (count > 0) onQueueFull(clientId, count);
        });
      }),
    );
  }

  /**
   * Records the packet identifier a queued message was sent with (a resumed session gets it
   * again, with DUP); for a PUBREL (after PUBREC), the delivery becomes a stored PUBREL.
   */
  async outgoingUpdate(client: ClientRef, packet: StoredPacket): Promise<void> {
    const messageId = packet.messageId as number;
    if (packet.cmd === "pubrel") {
      const pubrel = msgpack.encode({ cmd: "pubrel", messageId });
      const keys = [...this.deliveryKeys(client.id), this.keys.sharedReleased(client.id)];
      const epoch = this.options.replicaAcks?.epoch;
      await this.scripts.run("pubrel", keys, [messageId, pubrel, RELEASED_CAP]);
      // The PUBREL: until the subscriber has it, it takes a resent PUBLISH for the same message;
      // after it (MQTT.js hands a QoS 2 message over at PUBREL), a PUBLISH record a failover
      // brought back would be a second copy. So it goes only once a replica holds the record,
      // also while replicas are short: a primary that has just lost its replica may be one
      // Sentinel has already replaced, and what it takes is lost when it is demoted. Otherwise
      // aedes closes the connection, and the resumed session gets the stored PUBREL (or the
      // PUBLISH, if the record is gone) without waiting while replicas are short: a session
      // must resume however long they are, and by then a replaced primary has most likely
      // been demoted.
      const acks = this.options.replicaAcks;
      if (acks === undefined) return;
      const resumed = this.resumedPubrels.get(client);
      if (resumed?.delete(messageId) === true) await acks.confirmedUnlessShort(epoch);
      else await acks.confirmed(epoch);
      return;
    }
    // Those of one turn in one script: a delivery waits for its record, as aedes awaits this.
    const clientId = client.id;
    await this.deliveries.add(this.callOf(clientId), { clientId, messageId, ref: refOf(packet) });
    // aedes writes the message now: a later attempt of it skips this connection.
    this.inboundQos2?.attempts.written(client, packet.payload);
  }

  /**
   * A PUBACK or PUBCOMP: the delivery leaves the queue. The acknowledgements read in one turn
   * of the event loop go as one script (one per session on a Cluster). Resolves with the stored
   * packet, read only if the broker has an `ack` listener (aedes emits it with the packet).
   */
  outgoingClearMessageId(
    client: ClientRef,
    packet: Pick<StoredPacket, "messageId"> &
      Partial<Pick<StoredPacket, "brokerId" | "brokerCounter" | "cmd">>,
  ): Promise<StoredPacket | undefined> {
    if (isCleanAcknowledgement(client, packet)) return Promise.resolve(undefined);
    const clientId = client.id;
    // A delivery authorizeForward refused before it got a packet id: found by its origin.
    if (packet.messageId === undefined) {
      // Not a later attempt of a message this connection had: the queue may be all it has.
      if (this.inboundQos2?.attempts.skipped(packet) === true) return Promise.resolve(undefined);
      return this.dropQueued(clientId, packet);
    }
    return this.acks.add(this.callOf(clientId), {
      clientId,
      messageId: packet.messageId as number,
    });
  }

  /**
   * The origins of the session's latest shared deliveries PUBREC'd (pubrel-4.lua): read before
   * a group's entries are sent to it again, not for each delivery.
   */
  async sharedReleased(clientId: string): Promise<Set<string>> {
    const refs = await this.db.lrange(this.keys.sharedReleased(clientId), 0, -1);
    const origins = new Set<string>();
    for (const ref of refs) {
      const origin = originOfSharedRef(ref);
      if (origin !== undefined) origins.add(origin);
    }
    return origins;
  }

  /** The session's queue in resend order, as aedes' patched emptyQueue walks it at CONNECT. */
  async outgoingPackets(client: ClientRef): Promise<StoredPacket[]> {
    const read = await this.firstOwnerRead(client);
    // The CONNECT's last step: the read is of no use after it.
    this.firstOwners.delete(client);
    if (read !== undefined && !read.holdsQueue && isEmpty(read.subscriptions)) return [];
    const queue = await this.queueReads.add(this.callOf(client.id), client.id);
    const packets = inResendOrder(queue.packets);
    const pubrels = packets.filter((packet) => packet.cmd === "pubrel");
    if (pubrels.length > 0) {
      this.resumedPubrels.set(client, new Set(pubrels.map((packet) => packet.messageId as number)));
    }
    const attempts = this.inboundQos2?.attempts;
    if (attempts !== undefined) {
      for (const packet of packets as QueuedPacket[]) {
        if (typeof packet.origin === "string") attempts.resumed(client, packet.origin);
      }
      // Those it completed since, on any connection: a later attempt is a second copy.
      for (const origin of queue.releasedOrigins) attempts.resumed(client, origin);
    }
    return packets;
  }

  outgoingStream(client: ClientRef): Readable {
    return Readable.from(this.queued(client.id));
  }

  private async dropQueued(
    clientId: string,
    packet: Partial<Pick<StoredPacket, "brokerId" | "brokerCounter">>,
  ): Promise<undefined> {
    if (packet.brokerId === undefined || packet.brokerCounter === undefined) return undefined;
    const ref = `${packet.brokerId}:${packet.brokerCounter}`;
    await this.db
      .multi()
      .lrem(this.keys.queue(clientId), 0, ref)
      .hdel(this.keys.packets(clientId), ref)
      .exec();
    return undefined;
  }

  async incomingStorePacket(client: ClientRef, packet: StoredPacket): Promise<void> {
    const reservation = this.inboundQos2?.of(client.id, packet.qos, packet.payload);
    if (reservation !== undefined) this.inboundQos2?.release(packet.payload as Buffer);
    // Its publish script marked it published: only the confirmation is left to wait for.
    const published = reservation?.done === true;
    const encoded = reservation?.published ?? encodeIncoming(packet);
    const key = this.keys.incoming(client.id);
    const giveUpAt = Date.now() + INCOMING_STORE_RETRY_MS;
    for (;;) {
      try {
        if (!published) await this.db.hset(key, packet.messageId as number, encoded);
        // The PUBREC: a resend the id no longer catches would be published again. A reserved
        // message's writes must be confirmed in the epoch they were made in.
        await this.replicated(reservation?.epoch);
        return;
      } catch (error) {
        const lasting = error instanceof ReplicaEpochChanged;
        if (lasting || this.destroyed || Date.now() >= giveUpAt) throw error;
        await pause(INCOMING_STORE_PAUSE_MS, undefined, { ref: false });
      }
    }
  }

  /**
   * A PUBLISH's duplicate check, or a PUBREL's. A QoS 2 PUBLISH not published yet reserves its
   * packet identifier (inbound-qos2.ts) before aedes publishes it; a PUBREL finds only a
   * published message (a reservation is no message).
   */
  async incomingGetPacket(client: ClientRef, packet: StoredPacket): Promise<StoredPacket> {
    const reservations = this.inboundQos2;
    const messageId = packet.messageId as number;
    if (reservations !== undefined && packet.cmd === "publish" && Buffer.isBuffer(packet.payload)) {
      const token = reservations.nextToken();
      const epoch = this.options.replicaAcks?.epoch ?? 0;
      const clientId = client.id;
      const digest = messageDigest(packet.topic ?? "", packet.payload);
      const found = await this.reservations.add("", { clientId, messageId, token, digest });
      if (found === null) throw new Error("reservation not written");
      if (!isPending(found)) return msgpack.decode(found) as StoredPacket;
      // `pending:<token>/<origin>/<digest>`: a resend's take-over keeps the origin.
      const pending = found.toString();
      const origin = pending.split("/")[1] ?? token;
      reservations.hold(packet.payload, {
        clientId,
        key: this.keyPrefix() + this.keys.incoming(clientId),
        field: String(messageId),
        pending,
        origin,
        again: origin !== token,
        published: encodeIncoming(packet),
        done: false,
        epoch,
      });
      throw new Error("no such packet");
    }
    const stored = await this.db.hgetBuffer(this.keys.incoming(client.id), String(messageId));
    if (stored === null || isPending(stored)) throw new Error("no such packet");
    return msgpack.decode(stored) as StoredPacket;
  }

  async incomingDelPacket(client: ClientRef, packet: StoredPacket): Promise<void> {
    const id = String(packet.messageId);
    await this.db.hdel(this.keys.incoming(client.id), id, queuedField(id), sharedField(id));
  }

  /** [MQTT-3.1.2-6] A clean session's QoS 2 state ends with its connection. */
  async cleanIncoming(client: ClientRef): Promise<void> {
    const read = await this.firstOwnerRead(client);
    if (read !== undefined && !read.holdsIncoming) return;
    await this.incomingCleans.add(this.callOf(client.id), this.keys.incoming(client.id));
  }

  /** A will per client and broker: a client taken over keeps the old broker's until it ends. */
  async putWill(client: ClientRef, packet: StoredPacket): Promise<void> {
    const brokerId = this.liveBroker().id;
    packet.brokerId = brokerId;
    packet.clientId = client.id;
    // The index first (same write): a crash between leaves an entry naming nothing (dropped
    // when streamWill meets it); the other order could leave a will no survivor finds.
    await Promise.all([
      this.db.sadd(this.keys.willIndex, this.keys.willIndexEntry(brokerId, client.id)),
      this.db.hset(this.keys.wills(client.id), brokerId, msgpack.encode(packet)),
    ]);
    // The CONNACK: a will lost with the primary would never go out. Waited for, not required:
    // short of replicas, clients with a will still connect.
    await this.replicated().catch(() => {});
  }

  async getWill(client: ClientRef): Promise<StoredPacket | null> {
    const stored = await this.db.hgetBuffer(this.keys.wills(client.id), this.liveBroker().id);
    return stored === null ? null : (msgpack.decode(stored) as StoredPacket);
  }

  async delWill(client: ClientRef & { brokerId?: string }): Promise<StoredPacket | null> {
    // At CONNECT, with the session read ahead: only this node writes its own wills, so none
    // stored then means none to delete. One that a concurrent CONNECT of the id stores here
    // meanwhile is that connection's: aedes deletes it when that connection closes.
    const ahead = this.readAheads.get(client);
    if (ahead !== undefined) {
      this.readAheads.delete(client);
      if (!(await ahead).holdsWill) return null;
    }
    const brokerId = client.brokerId ?? this.liveBroker().id;
    const key = this.keys.wills(client.id);
    const [stored] = await Promise.all([
      this.db.hgetBuffer(key, brokerId),
      this.db.hdel(key, brokerId),
      // After the will (same write): see putWill.
      this.db.srem(this.keys.willIndex, this.keys.willIndexEntry(brokerId, client.id)),
    ]);
    return stored === null ? null : (msgpack.decode(stored) as StoredPacket);
  }

  /** Every will stored for the client, by the broker it was left with. */
  async willsOf(clientId: string): Promise<Array<[brokerId: string, will: StoredPacket]>> {
    const stored = await this.db.hgetallBuffer(this.keys.wills(clientId));
    return Object.entries(stored).map(([brokerId, value]) => [
      brokerId,
      msgpack.decode(value) as StoredPacket,
    ]);
  }

  /**
   * Deletes the client's wills with a Will Delay Interval left with other brokers: its new
   * connection voids them [MQTT-3.1.3-9]. Its will left here, if any, is the new connection's.
   */
  async dropDelayedWills(clientId: string): Promise<void> {
    const own = this.liveBroker().id;
    for (const [brokerId, will] of await this.willsOf(clientId)) {
      const delay = (will as { properties?: { willDelayInterval?: number } }).properties
        ?.willDelayInterval;
      if (brokerId !== own && delay !== undefined && delay > 0) {
        await this.delWill({ id: clientId, brokerId });
      }
    }
  }

  /** Takes a will off the index the will sweep walks: a timer publishes it (or drops it). */
  async unindexWill(brokerId: string, clientId: string): Promise<void> {
    await this.db.srem(this.keys.willIndex, this.keys.willIndexEntry(brokerId, clientId));
  }

  /**
   * Removes all a session holds: subscriptions (the other nodes told, as for an UNSUBSCRIBE),
   * queue, packets and their identifiers, inbound QoS 2 packets, and wills. For a session that
   * expired; its wills are published first by whoever calls this. `keepWills` leaves them (a
   * session that ended with its connection: their connections publish or delete them).
   */
  async wipeSession(clientId: string, options: { keepWills?: boolean } = {}): Promise<void> {
    await this.cleanSubscriptions({ id: clientId });
    const wills = options.keepWills === true ? [] : [this.keys.wills(clientId)];
    const brokers = wills.length === 0 ? [] : await this.db.hkeys(this.keys.wills(clientId));
    // One slot on a Cluster: the keys share the client's hash tag.
    const sessionKeys = [
      ...this.deliveryKeys(clientId),
      this.keys.incoming(clientId),
      ...wills,
      this.keys.sharedReleased(clientId),
    ];
    await Promise.all([
      this.db.del(...sessionKeys),
      this.db.srem(this.keys.subscribedClients, clientId),
      ...brokers.map((brokerId) =>
        this.db.srem(this.keys.willIndex, this.keys.willIndexEntry(brokerId, clientId)),
      ),
    ]);
  }

  /** Wills left with brokers not in `brokers` (dead ones). */
  streamWill(brokers: Record<string, unknown> = {}): Readable {
    return Readable.from(this.orphanedWills(brokers));
  }

  /**
   * The wills left with one broker (a node just found dead): an SSCAN of the will index that
   * returns only that broker's entries, so the other nodes' wills are neither sent nor read.
   */
  async *willsLeftWith(brokerId: string): AsyncGenerator<StoredPacket> {
    const match = `${escapeGlob(brokerId)}:*`;
    const seen = new Set<string>();
    const scan = this.db.sscanStream(this.keys.willIndex, { match, count: LOAD_BATCH });
    for await (const chunk of scan) {
      const owners = (chunk as string[])
        // SSCAN may return an entry twice; `a:*` also matches a broker named `a:b`.
        .filter((entry) => !seen.has(entry) && seen.add(entry))
        .map((entry) => ({ entry, ...this.keys.parseWillIndexEntry(entry) }))
        .filter((owner) => owner.brokerId === brokerId);
      yield* this.loadWills(owners);
    }
  }

  /** Clients whose session holds exactly this filter (at QoS 1 or 2). */
  getClientList(filter: string): Readable {
    const clients = this.trie
      .match(filter)
      .filter((sub) => sub.topic === filter)
      .map((sub) => sub.clientId);
    return Readable.from(clients);
  }

  async destroy(): Promise<void> {
    if (this.destroyed) throw new Error("destroyed called twice!");
    this.destroyed = true;
    // The connection is the fabric's: it closes it.
    await this.broadcast?.stop();
  }

  /** Reads every stored session's subscriptions into `trie`, in pipelined batches. */
  private async loadSubscriptions(trie: QlobberSub): Promise<number> {
    const clientIds = await this.db.smembers(this.keys.subscribedClients);
    let count = 0;
    for (let start = 0; start < clientIds.length; start += LOAD_BATCH) {
      const batch = clientIds.slice(start, start + LOAD_BATCH);
      const hashes = await Promise.all(
        batch.map((clientId) => this.db.hgetallBuffer(this.keys.subscriptions(clientId))),
      );
      batch.forEach((clientId, i) => {
        for (const value of Object.values(hashes[i] ?? {})) {
          const sub = msgpack.decode(value) as SubscriptionRequest;
          count++;
          if (sub.qos > 0) trie.add(sub.topic, { ...trieEntry(sub), clientId });
        }
      });
    }
    return count;
  }

  private recordDeliveries(call: Array<Waiting<Delivery, void>>): void {
    const sessions = bySession(call);
    const keys = sessions.map(([first]) => this.keys.messageIds(first?.item.clientId as string));
    const args: Array<string | number> = [];
    for (const session of sessions) {
      args.push(session.length);
      for (const { item } of session) args.push(item.messageId, item.ref);
    }
    this.scripts.run("recordDeliveries", keys, args).then(
      () => {
        for (const waiting of call) waiting.resolve();
      },
      (error: unknown) => {
        for (const waiting of call) waiting.reject(error);
      },
    );
  }

  private acknowledge(call: Array<Waiting<Acknowledgement, StoredPacket | undefined>>): void {
    const sessions = bySession(call);
    const keys = sessions.flatMap(([first]) => this.deliveryKeys(first?.item.clientId as string));
    const wanted = (this.broker?.listenerCount("ack") ?? 0) > 0 ? "1" : "0";
    const args: Array<string | number> = [wanted];
    for (const session of sessions) {
      args.push(session.length);
      for (const { item } of session) args.push(item.messageId);
    }
    const ordered = sessions.flat();
    this.scripts.runBuffer("acknowledge", keys, args).then(
      (values) => {
        ordered.forEach((waiting, i) => {
          const value = (values as Array<Buffer | null>)[i];
          if (value === null || value === undefined) {
            waiting.resolve(undefined);
            return;
          }
          const packet = msgpack.decode(value) as StoredPacket;
          packet.messageId = waiting.item.messageId;
          waiting.resolve(packet);
        });
      },
      (error: unknown) => {
        for (const waiting of call) waiting.reject(error);
      },
    );
  }

  /** A session's subscriptions: as read ahead for this connection, else from Redis now. */
  private async storedSubscriptions(client: ClientRef): Promise<Record<string, Buffer>> {
    const ahead = this.readAheads.get(client);
    if (ahead !== undefined) return (await ahead).subscriptions;
    return this.db.hgetallBuffer(this.keys.subscriptions(client.id));
  }

  private async readSessions(clientIds: readonly string[]): Promise<SessionRead[]> {
    const keys = clientIds.flatMap((id) => [
      this.keys.subscriptions(id),
      this.keys.wills(id),
      this.keys.incoming(id),
      this.keys.queue(id),
    ]);
    const reply = await this.scripts.runBuffer("readSessions", keys, [this.liveBroker().id]);
    const values = reply as Array<Buffer[] | number>;
    return clientIds.map((_, i) => {
      const at = 4 * i;
      const pairs = values[at] as Buffer[];
      const subscriptions: Record<string, Buffer> = {};
      for (let p = 0; p + 1 < pairs.length; p += 2) {
        subscriptions[(pairs[p] as Buffer).toString()] = pairs[p + 1] as Buffer;
      }
      return {
        subscriptions,
        holdsWill: values[at + 1] === 1,
        holdsIncoming: values[at + 2] === 1,
        holdsQueue: values[at + 3] === 1,
      };
    });
  }

  /** A first owner's session as read at its claim; undefined if not one, or the read failed. */
  private firstOwnerRead(client: ClientRef): Promise<SessionRead | undefined> {
    const read = this.firstOwners.get(client);
    return read === undefined ? Promise.resolve(undefined) : read.catch(() => undefined);
  }

  private reserveIncoming(call: Array<Waiting<IncomingReservation, Buffer | null>>): void {
    const keys = call.map(({ item }) => this.keys.incoming(item.clientId));
    const args = call.flatMap(({ item }) => [item.messageId, item.token, item.digest]);
    this.scripts.runBuffer("reserveIncoming", keys, args).then(
      (values) => {
        call.forEach((waiting, i) => {
          waiting.resolve((values as Array<Buffer | null>)[i] ?? null);
        });
      },
      (error: unknown) => {
        for (const waiting of call) waiting.reject(error);
      },
    );
  }

  private deleteIncoming(call: Array<Waiting<string, void>>): Promise<void> {
    return this.db.del(...call.map(({ item }) => item)).then(
      () => {
        for (const waiting of call) waiting.resolve();
      },
      (error: unknown) => {
        for (const waiting of call) waiting.reject(error);
      },
    );
  }

  private async *queued(clientId: string): AsyncGenerator<StoredPacket> {
    yield* await this.outgoingPackets({ id: clientId });
  }

  private readQueues(call: Array<Waiting<string, SessionQueue>>): Promise<void> {
    const keys = call.flatMap(({ item }) => [
      ...this.deliveryKeys(item),
      this.keys.sharedReleased(item),
    ]);
    return this.scripts.runBuffer("readQueues", keys, []).then(
      (sessions) => {
        call.forEach((waiting, i) => {
          waiting.resolve(decodeQueue((sessions as QueueReply[])[i] ?? []));
        });
      },
      (error: unknown) => {
        for (const waiting of call) waiting.reject(error);
      },
    );
  }

  /**
   * A SUBSCRIBE's exact filters on a single Redis: every SUBSCRIBE of the turn asks in one
   * HMGET, and the stream is a plain one fed by the answer. One HGET and an async generator per
   * filter made a subscribe storm's retained lookups (mostly command topics that hold nothing)
   * 200,000 Redis commands and as many generators for 2,000 clients x 100 filters.
   */
  private exactRetained(filters: readonly string[]): Readable {
    const stream = new Readable({ objectMode: true, read() {} });
    const topics = filters.length === 1 ? filters : [...new Set(filters)];
    Promise.all(topics.map((topic) => this.retainedReads.add("", topic))).then(
      (values) => {
        for (const value of values) if (value !== null) stream.push(msgpack.decode(value));
        stream.push(null);
      },
      (error: Error) => stream.destroy(error),
    );
    return stream;
  }

  private readRetained(call: Array<Waiting<string, Buffer | null>>): void {
    const topics = call.map((waiting) => waiting.item);
    (this.db as Redis).hmgetBuffer(this.keys.retainedHash, ...topics).then(
      (values) => {
        call.forEach((waiting, i) => {
          waiting.resolve(values[i] ?? null);
        });
      },
      (error: unknown) => {
        for (const waiting of call) waiting.reject(error);
      },
    );
  }

  private async *retainedMatching(filters: readonly string[]): AsyncGenerator<StoredPacket> {
    const sent = new Set<string>();
    const matcher = new QlobberTrue(TOPIC_MATCHING);
    const prefixes: string[] = [];
    for (const filter of filters) {
      const wildcard = wildcardPosition(filter);
      if (wildcard === -1) {
        const stored = await (this.clustered
          ? this.db.getBuffer(this.keys.retainedTopic(filter))
          : this.db.hgetBuffer(this.keys.retainedHash, filter));
        if (stored === null || sent.has(filter)) continue;
        sent.add(filter);
        yield msgpack.decode(stored) as StoredPacket;
      } else {
        matcher.add(filter);
        // Up to the level before the wildcard: `a/#` matches `a` too.
        prefixes.push(filter.slice(0, Math.max(0, wildcard - 1)));
      }
    }
    if (prefixes.length === 0) return;
    const prefix = longestCommonPrefix(prefixes);
    const candidates = this.clustered
      ? this.scanRetainedKeys(this.db as Cluster, prefix)
      : this.scanRetainedHash(prefix);
    for await (const [topic, read] of candidates) {
      if (sent.has(topic) || !matcher.test(topic)) continue;
      const stored = await read();
      if (stored === null) continue;
      sent.add(topic);
      yield msgpack.decode(stored) as StoredPacket;
    }
  }

  private async *scanRetainedHash(
    prefix: string,
  ): AsyncGenerator<[string, () => Promise<Buffer | null>]> {
    const db = this.db as Redis;
    const stream = db.hscanBufferStream(this.keys.retainedHash, {
      match: `${escapeGlob(prefix)}*`,
      count: 1000,
    });
    for await (const chunk of stream) {
      const pairs = chunk as Buffer[];
      for (let i = 0; i + 1 < pairs.length; i += 2) {
        const value = pairs[i + 1] as Buffer;
        yield [(pairs[i] as Buffer).toString(), () => Promise.resolve(value)];
      }
    }
  }

  /** SCAN of every primary: a Cluster's retained messages are one key per topic. */
  private async *scanRetainedKeys(
    cluster: Cluster,
    prefix: string,
  ): AsyncGenerator<[string, () => Promise<Buffer | null>]> {
    const pattern = this.keys.pattern(this.keys.retainedTopic(prefix));
    for (const node of cluster.nodes("master")) {
      for await (const chunk of node.scanStream({ match: pattern, count: 1000 })) {
        for (const key of chunk as string[]) {
          const topic = this.keys.topicOfRetainedKey(key);
          yield [topic, () => cluster.getBuffer(this.keys.retainedTopic(topic))];
        }
      }
    }
  }

  private async *orphanedWills(brokers: Record<string, unknown>): AsyncGenerator<StoredPacket> {
    const entries = await this.db.smembers(this.keys.willIndex);
    for (let start = 0; start < entries.length; start += LOAD_BATCH) {
      const owners = entries
        .slice(start, start + LOAD_BATCH)
        .map((entry) => ({ entry, ...this.keys.parseWillIndexEntry(entry) }))
        .filter(({ brokerId }) => !brokers[brokerId]);
      yield* this.loadWills(owners);
    }
  }

  /** The wills that will index entries point to; an entry with no will is removed. */
  private async *loadWills(owners: WillIndexEntry[]): AsyncGenerator<StoredPacket> {
    const wills = await Promise.all(
      owners.map(({ brokerId, clientId }) =>
        this.db.hgetBuffer(this.keys.wills(clientId), brokerId),
      ),
    );
    for (let i = 0; i < owners.length; i++) {
      const will = wills[i];
      if (will === null || will === undefined) {
        // An index entry left by a crash between its writes (see putWill).
        void this.db.srem(this.keys.willIndex, (owners[i] as WillIndexEntry).entry);
        continue;
      }
      yield msgpack.decode(will) as StoredPacket;
    }
  }

  /**
   * Which call a session's batched work goes in: one for all on a single Redis; per session on
   * a Cluster, where a script's keys must share a slot.
   */
  private callOf(clientId: string): string {
    return this.clustered ? clientId : "";
  }

  /** A session's keys, as removeSubscriptions takes them. */
  private sessionKeys(clientId: string): string[] {
    return [this.keys.subscriptions(clientId), ...this.deliveryKeys(clientId)];
  }

  /** A session's queue, packets and packet identifiers, as the delivery scripts take them. */
  private deliveryKeys(clientId: string): string[] {
    return [this.keys.queue(clientId), this.keys.packets(clientId), this.keys.messageIds(clientId)];
  }

  /** The key prefix ioredis adds on this connection (scripts on other connections need it). */
  private keyPrefix(): string {
    return this.db.options.keyPrefix ?? "";
  }

  /**
   * Resolves once the replicas hold what this node wrote so far, if they are asked to; `since`:
   * the epoch the writes were made in (replica-acks.ts).
   */
  private replicated(since?: number): Promise<void> {
    return this.options.replicaAcks?.confirmed(since) ?? Promise.resolve();
  }

  private liveBroker(): PersistenceBroker {
    if (this.broker === undefined) throw new Error("persistence is not set up");
    return this.broker;
  }

  private liveBroadcast(): SubscriptionBroadcast {
    if (this.broadcast === undefined) throw new Error("persistence is not set up");
    return this.broadcast;
  }
}

/** An entry of the will index, parsed. */
interface WillIndexEntry {
  entry: string;
  brokerId: string;
  clientId: string;
}

/** What readAhead() reads of a session (read-sessions-4.lua). */
interface SessionRead {
  subscriptions: Record<string, Buffer>;
  /** A will of the client left with this node. */
  holdsWill: boolean;
  /** Inbound QoS 2 packets (their ids) of the session. */
  holdsIncoming: boolean;
  /** Anything in the session's queue. */
  holdsQueue: boolean;
}

function isEmpty(record: Record<string, unknown>): boolean {
  for (const _ in record) return false;
  return true;
}

/** An inbound QoS 2 packet as its id's record holds it once published. */
function encodeIncoming(packet: StoredPacket): Buffer {
  const stored = new Packet(packet);
  stored.messageId = packet.messageId as number;
  return msgpack.encode(stored);
}

/**
 * A session's queue as read-queues-4.lua returns it: nothing, or entries, packets, ids and its
 * released list.
 */
type QueueReply = [] | [Buffer[], Buffer[], Buffer[], Buffer[]];

/** A session's queue, and the origins of the inbound QoS 2 messages it PUBREC'd lately. */
interface SessionQueue {
  packets: StoredPacket[];
  releasedOrigins: string[];
}

/** The packets of a queue in its order, each with the identifier it was last sent with. */
function decodeQueue(reply: QueueReply): SessionQueue {
  if (reply.length === 0) return { packets: [], releasedOrigins: [] };
  const [entries, packetPairs, idPairs, releasedList] = reply;
  const releasedOrigins: string[] = [];
  for (const buffer of releasedList) {
    if (buffer[0] === RELEASED_ORIGIN_CODE) releasedOrigins.push(buffer.toString("utf8", 1));
  }
  const packets = new Map<string, Buffer>();
  for (let i = 0; i + 1 < packetPairs.length; i += 2) {
    packets.set((packetPairs[i] as Buffer).toString(), packetPairs[i + 1] as Buffer);
  }
  const idOf = new Map<string, number>();
  for (let i = 0; i + 1 < idPairs.length; i += 2) {
    idOf.set((idPairs[i + 1] as Buffer).toString(), Number((idPairs[i] as Buffer).toString()));
  }
  const queue: StoredPacket[] = [];
  for (const buffer of entries) {
    const entry = buffer.toString();
    const released = entry.startsWith(RELEASED);
    const ref = released ? entry.slice(RELEASED.length) : entry;
    const stored = packets.get(ref);
    if (stored === undefined) continue;
    const packet = msgpack.decode(stored) as StoredPacket;
    if (released) Object.assign(packet, parseRef(ref));
    packet.messageId = idOf.get(entry) ?? (released ? packet.messageId : undefined);
    queue.push(packet);
  }
  return { packets: queue, releasedOrigins };
}

/** A queued message's name within its session: the broker that took it in, and its counter. */
function refOf(packet: StoredPacket): string {
  return `${packet.brokerId}:${packet.brokerCounter}`;
}

function parseRef(ref: string): { brokerId: string; brokerCounter: number } {
  const colon = ref.lastIndexOf(":");
  return { brokerId: ref.slice(0, colon), brokerCounter: Number(ref.slice(colon + 1)) };
}

function trieEntry(sub: SubscriptionRequest): Omit<TrieSubscription, "clientId"> {
  return { topic: sub.topic, qos: sub.qos, rh: sub.rh, rap: sub.rap, nl: sub.nl };
}

/** msgpack keeps an undefined field as nil: stored without them, read back without them. */
function definedFields(sub: SubscriptionRequest): Partial<SubscriptionRequest> {
  return Object.fromEntries(Object.entries(sub).filter(([, value]) => value !== undefined));
}

/** The first wildcard of a filter (`#` can only be last), or -1. */
function wildcardPosition(filter: string): number {
  const one = filter.indexOf("+");
  return one !== -1 ? one : filter.indexOf("#");
}

function longestCommonPrefix(texts: readonly string[]): string {
  const sorted = [...texts].sort();
  const first = sorted[0] ?? "";
  const last = sorted[sorted.length - 1] ?? "";
  let i = 0;
  while (i < first.length && first[i] === last[i]) i++;
  return first.slice(0, i);
}
