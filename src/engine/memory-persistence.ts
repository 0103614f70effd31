import { Readable } from "node:stream";
import { QlobberTrue } from "qlobber";
import QlobberSub, { type TrieSubscription } from "qlobber/aedes/qlobber-sub.js";
import {
  type ClientRef,
  isSharedDelivery,
  Packet,
  type QueueLimits,
  type StoredPacket,
  type SubscriptionOptions,
  type SubscriptionRequest,
  TOPIC_MATCHING,
} from "./persistence-types.js";
import { inResendOrder } from "./resend-order.js";

export type { StoredPacket, SubscriptionRequest } from "./persistence-types.js";

/**
 * The in-memory store of a node without Redis: retained messages, sessions' subscriptions,
 * queued and in-flight messages, and wills. It implements aedes' persistence interface (the
 * one aedes-persistence's MemoryPersistence implements), and adds what Sluice relies on: a
 * capped queue per session, and topic matching per the spec.
 */
export class MemoryPersistence {
  private retained: Map<string, StoredPacket> | undefined = new Map();
  private readonly subscriptions = new Map<string, Map<string, SubscriptionOptions>>();
  private readonly outgoing = new Map<string, StoredPacket[]>();
  /**
   * Per session, the packet ids of shared deliveries in flight (not in its queue): a PUBREC of
   * one puts its PUBREL in the queue. At most one per packet id.
   */
  private readonly sharedInFlight = new Map<string, Set<number>>();
  private readonly incoming = new Map<string, Map<number, StoredPacket>>();
  private readonly wills = new Map<string, StoredPacket>();
  /** QoS 1/2 subscriptions by filter: what offline sessions get queued for. */
  private readonly trie = new QlobberSub(TOPIC_MATCHING);
  private clientsCount = 0;
  private brokerId: string | undefined;

  constructor(private readonly limits: QueueLimits) {}

  async setup(broker: { id: string }): Promise<void> {
    this.brokerId = broker.id;
  }

  async storeRetained(packet: StoredPacket): Promise<void> {
    const retained = this.liveRetained();
    const topic = packet.topic as string;
    if (packet.payload === undefined || packet.payload.length === 0) retained.delete(topic);
    else retained.set(topic, { ...packet });
  }

  /** Retained messages held, for the gauge. */
  retainedCount(): number {
    return this.retained?.size ?? 0;
  }

  createRetainedStreamCombi(filters: readonly string[]): Readable {
    const retained = this.liveRetained();
    // Most SUBSCRIBEs name exact topics that hold no retained message (command topics): they
    // get one empty stream, not a matcher and a walk. In a subscribe storm that walk was the
    // node's largest allocation.
    if (!filters.some((filter) => couldMatchRetained(retained, filter))) return noRetained();
    return Readable.from(retainedMatching(retained, filters));
  }

  createRetainedStream(filter: string): Readable {
    return this.createRetainedStreamCombi([filter]);
  }

  async addSubscriptions(client: ClientRef, subs: readonly SubscriptionRequest[]): Promise<void> {
    let stored = this.subscriptions.get(client.id);
    if (stored === undefined) {
      stored = new Map();
      this.subscriptions.set(client.id, stored);
      this.clientsCount++;
    }
    for (const sub of subs) {
      const previous = stored.get(sub.topic);
      const options: SubscriptionOptions = { qos: sub.qos, rh: sub.rh, rap: sub.rap, nl: sub.nl };
      // Kept with the session (restored on reconnect), never in the trie.
      if (sub.subscriptionIdentifier !== undefined)
        options.subscriptionIdentifier = sub.subscriptionIdentifier;
      if (sub.qos > 0) {
        this.trie.add(sub.topic, {
          clientId: client.id,
          topic: sub.topic,
          qos: sub.qos,
          rh: sub.rh,
          rap: sub.rap,
          nl: sub.nl,
        });
      } else if (previous !== undefined && previous.qos > 0) {
        this.trie.remove(sub.topic, { clientId: client.id, topic: sub.topic });
      }
      stored.set(sub.topic, options);
    }
  }

  async removeSubscriptions(client: ClientRef, filters: readonly string[]): Promise<void> {
    const stored = this.subscriptions.get(client.id);
    if (stored === undefined) return;
    for (const topic of filters) {
      const options = stored.get(topic);
      if (options === undefined) continue;
      if (options.qos > 0) this.trie.remove(topic, { clientId: client.id, topic });
      stored.delete(topic);
    }
    if (stored.size === 0) {
      this.clientsCount--;
      this.subscriptions.delete(client.id);
    }
  }

  async subscriptionsByClient(client: ClientRef): Promise<SubscriptionRequest[]> {
    const stored = this.subscriptions.get(client.id);
    if (stored === undefined) return [];
    return [...stored].map(([topic, options]) => ({ topic, ...options }));
  }

  async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    return { subsCount: this.trie.subscriptionsCount, clientsCount: this.clientsCount };
  }

  async subscriptionsByTopic(topic: string): Promise<TrieSubscription[]> {
    return this.trie.match(topic);
  }

  /** Resolves with the filters the session held. */
  async cleanSubscriptions(client: ClientRef): Promise<string[]> {
    const stored = this.subscriptions.get(client.id);
    if (stored === undefined) return [];
    for (const [topic, options] of stored) {
      if (options.qos > 0) this.trie.remove(topic, { clientId: client.id, topic });
    }
    this.clientsCount--;
    this.subscriptions.delete(client.id);
    return [...stored.keys()];
  }

  async outgoingEnqueue(sub: { clientId: string }, packet: StoredPacket): Promise<void> {
    this.enqueue(sub.clientId, packet);
  }

  async outgoingEnqueueCombi(
    subs: ReadonlyArray<{ clientId: string }>,
    packet: StoredPacket,
  ): Promise<void> {
    for (const sub of subs) this.enqueue(sub.clientId, packet);
  }

  /**
   * Records the packet identifier a queued message was sent with; for a PUBREL (after PUBREC),
   * the delivery becomes the PUBREL (a shared delivery's PUBREL joins the queue).
   */
  async outgoingUpdate(client: ClientRef, packet: StoredPacket): Promise<void> {
    const messageId = packet.messageId as number;
    if (isSharedDelivery(packet)) {
      let ids = this.sharedInFlight.get(client.id);
      if (ids === undefined) {
        ids = new Set();
        this.sharedInFlight.set(client.id, ids);
      }
      ids.add(messageId);
      return;
    }
    const queue = this.outgoing.get(client.id);
    const released = packet.cmd === "pubrel" && !queue?.some((q) => q.messageId === messageId);
    if (released && this.forgetShared(client.id, messageId)) {
      this.outgoing.set(client.id, [...(queue ?? []), packet]);
      return;
    }
    if (queue === undefined) return;
    for (let i = 0; i < queue.length; i++) {
      const queued = queue[i] as StoredPacket;
      // A PUBREL names no origin (a stored one neither): found by its packet id alone.
      if (packet.cmd !== "pubrel" && queued.brokerId === packet.brokerId) {
        // Identifiers wrap at 65535: the broker counter tells same-id messages apart.
        if (queued.brokerCounter === packet.brokerCounter) {
          queued.messageId = packet.messageId as number;
          return;
        }
      } else if (queued.messageId === packet.messageId) {
        // A PUBREL moves to the end (a PUBREC again leaves it): a resume sends stored PUBRELs
        // in PUBREC order [MQTT-4.6.0-4], as the Redis persistence keeps them (pubrel-4.lua).
        if (packet.cmd !== "pubrel") queue[i] = packet;
        else if (queued.cmd !== "pubrel") {
          queue.splice(i, 1);
          queue.push(packet);
        }
        return;
      }
    }
    // Not found: the queue cap dropped it while its delivery waited; the delivery still goes
    // out, and its acknowledgement finds nothing to clear.
  }

  async outgoingClearMessageId(
    client: ClientRef,
    packet: Pick<StoredPacket, "messageId"> &
      Partial<Pick<StoredPacket, "brokerId" | "brokerCounter">>,
  ): Promise<StoredPacket | undefined> {
    if (packet.messageId !== undefined) this.forgetShared(client.id, packet.messageId);
    const queue = this.outgoing.get(client.id);
    if (queue === undefined) return undefined;
    // aedes clears a delivery authorizeForward refused before it got a packet id: by id, that
    // would be whichever queued message has none yet, so such a packet is found by its origin.
    const index =
      packet.messageId === undefined
        ? queue.findIndex(
            (queued) =>
              queued.brokerId === packet.brokerId && queued.brokerCounter === packet.brokerCounter,
          )
        : queue.findIndex((queued) => queued.messageId === packet.messageId);
    if (index === -1) return undefined;
    const [cleared] = queue.splice(index, 1);
    if (queue.length === 0) this.outgoing.delete(client.id);
    return cleared;
  }

  /** The session's queue, in resend order, as aedes' patched emptyQueue walks it at CONNECT. */
  async outgoingPackets(client: ClientRef): Promise<StoredPacket[]> {
    return this.queueCopy(client.id);
  }

  outgoingStream(client: ClientRef): Readable {
    return Readable.from(this.queueCopy(client.id));
  }

  async incomingStorePacket(client: ClientRef, packet: StoredPacket): Promise<void> {
    let store = this.incoming.get(client.id);
    if (store === undefined) {
      store = new Map();
      this.incoming.set(client.id, store);
    }
    const stored = new Packet(packet);
    stored.messageId = packet.messageId as number;
    store.set(packet.messageId as number, stored);
  }

  async incomingGetPacket(client: ClientRef, packet: StoredPacket): Promise<StoredPacket> {
    const stored = this.incoming.get(client.id)?.get(packet.messageId as number);
    if (stored === undefined) throw new Error("no such packet");
    return stored;
  }

  async incomingDelPacket(client: ClientRef, packet: StoredPacket): Promise<void> {
    const store = this.incoming.get(client.id);
    if (store === undefined || !store.delete(packet.messageId as number)) {
      throw new Error("no such packet");
    }
    if (store.size === 0) this.incoming.delete(client.id);
  }

  /** [MQTT-3.1.2-6] A clean session's QoS 2 state ends with its connection. */
  async cleanIncoming(client: ClientRef): Promise<void> {
    this.incoming.delete(client.id);
  }

  async putWill(client: ClientRef, packet: StoredPacket): Promise<void> {
    packet.brokerId = this.brokerId as string;
    packet.clientId = client.id;
    this.wills.set(client.id, packet);
  }

  async getWill(client: ClientRef): Promise<StoredPacket | undefined> {
    return this.wills.get(client.id);
  }

  async delWill(client: ClientRef): Promise<StoredPacket | undefined> {
    const will = this.wills.get(client.id);
    this.wills.delete(client.id);
    return will;
  }

  /** Wills of brokers not in `brokers` (dead ones). */
  streamWill(brokers: Record<string, unknown> = {}): Readable {
    const orphaned = [...this.wills.values()].filter((will) => !(will.brokerId in brokers));
    return Readable.from(orphaned);
  }

  /** Clients whose session holds exactly this filter. */
  getClientList(filter: string): Readable {
    const clients = [...this.subscriptions]
      .filter(([, filters]) => filters.has(filter))
      .map(([clientId]) => clientId);
    return Readable.from(clients);
  }

  async destroy(): Promise<void> {
    if (this.retained === undefined) throw new Error("destroyed called twice!");
    this.retained = undefined;
  }

  private liveRetained(): Map<string, StoredPacket> {
    if (this.retained === undefined) throw new Error("persistence is destroyed");
    return this.retained;
  }

  /** Whether `messageId` was a shared delivery in flight to the session (now forgotten). */
  private forgetShared(clientId: string, messageId: number): boolean {
    const ids = this.sharedInFlight.get(clientId);
    if (ids === undefined || !ids.delete(messageId)) return false;
    if (ids.size === 0) this.sharedInFlight.delete(clientId);
    return true;
  }

  /** A copy of the session's queue (it changes while aedes walks it), in resend order. */
  private queueCopy(clientId: string): StoredPacket[] {
    return inResendOrder(this.outgoing.get(clientId) ?? []);
  }

  private enqueue(clientId: string, packet: StoredPacket): void {
    let queue = this.outgoing.get(clientId);
    if (queue === undefined) {
      queue = [];
      this.outgoing.set(clientId, queue);
    }
    queue.push(new Packet(packet));
    const { maxQueuedPerClient, onQueueFull } = this.limits;
    if (queue.length > maxQueuedPerClient) {
      onQueueFull(clientId, dropOldest(queue, queue.length - maxQueuedPerClient));
    }
  }
}

function couldMatchRetained(retained: ReadonlyMap<string, StoredPacket>, filter: string): boolean {
  if (retained.size === 0) return false;
  return filter.includes("+") || filter.includes("#") || retained.has(filter);
}

/** A stream of no retained messages. */
function noRetained(): Readable {
  return new Readable({
    objectMode: true,
    read() {
      this.push(null);
    },
  });
}

/** Retained messages matching any of the filters, each once. */
function* retainedMatching(
  retained: ReadonlyMap<string, StoredPacket>,
  filters: readonly string[],
): Generator<StoredPacket> {
  const matcher = new QlobberTrue(TOPIC_MATCHING);
  for (const filter of filters) matcher.add(filter);
  for (const [topic, packet] of retained) if (matcher.test(topic)) yield packet;
}

/**
 * Drops the oldest `excess` messages of a queue; PUBRELs stay (messages already delivered
 * whose PUBCOMP is awaited, bounded by the in-flight window). Returns how many were dropped.
 */
function dropOldest(queue: StoredPacket[], excess: number): number {
  let dropped = 0;
  let write = 0;
  for (const packet of queue) {
    if (dropped < excess && packet.cmd !== "pubrel") dropped++;
    else queue[write++] = packet;
  }
  queue.length = write;
  return dropped;
}
