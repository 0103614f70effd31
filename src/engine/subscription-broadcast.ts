import type QlobberSub from "qlobber/aedes/qlobber-sub.js";
import type { SubscriptionRequest } from "./persistence-types.js";

/** A message on the broker's emitter, as aedes hands it to subscribers. */
interface EmitterPacket {
  topic: string;
  payload: Buffer | string;
}

/** The parts of the aedes broker the broadcast uses. */
export interface BroadcastBroker {
  readonly id: string;
  publish(packet: EmitterPacket, done: (error?: Error) => void): void;
  subscribe(
    topic: string,
    handler: (packet: EmitterPacket, done: () => void) => void,
    done: () => void,
  ): void;
  unsubscribe(
    topic: string,
    handler: (packet: EmitterPacket, done: () => void) => void,
    done: () => void,
  ): void;
}

/** aedes-persistence's topics, kept so that the messages read the same on the wire. */
const ADDED = "$SYS/sub/add";
const REMOVED = "$SYS/sub/rm";
const ANY = "$SYS/sub/+";

interface Announcement {
  clientId: string;
  subs: Array<Partial<SubscriptionRequest> & { topic: string }>;
}

/**
 * Every node keeps all persistent sessions' QoS 1/2 subscriptions in memory (what
 * subscriptionsByTopic answers from); a node learns of another node's changes by a message on
 * the broker's emitter (Redis pub/sub). The emitter delivers locally first (local-first.ts), so
 * this node's own view changes as the announcement is published; a change resolves once Redis
 * has acknowledged the PUBLISH, which it does after handing it to every subscribed node.
 */
export class SubscriptionBroadcast {
  private readonly onMessage = (packet: EmitterPacket, done: () => void): void => {
    this.apply(packet);
    done();
  };

  constructor(
    private readonly broker: BroadcastBroker,
    /** Where announcements land (two tries while the subscriptions are read again). */
    private readonly targets: () => readonly QlobberSub[],
  ) {}

  start(): Promise<void> {
    return new Promise((resolve) => this.broker.subscribe(ANY, this.onMessage, resolve));
  }

  stop(): Promise<void> {
    return new Promise((resolve) => this.broker.unsubscribe(ANY, this.onMessage, resolve));
  }

  added(clientId: string, subs: readonly SubscriptionRequest[]): Promise<void> {
    if (subs.length === 0) return Promise.resolve();
    return this.announce(ADDED, { clientId, subs: [...subs] });
  }

  removed(clientId: string, filters: readonly string[]): Promise<void> {
    if (filters.length === 0) return Promise.resolve();
    return this.announce(REMOVED, { clientId, subs: filters.map((topic) => ({ topic })) });
  }

  private announce(topic: string, announcement: Announcement): Promise<void> {
    const payload = Buffer.from(JSON.stringify(announcement));
    return new Promise((resolve, reject) => {
      this.broker.publish({ topic, payload }, (error) => {
        if (error === undefined || error === null) resolve();
        else reject(error);
      });
    });
  }

  private apply(packet: EmitterPacket): void {
    let announcement: Announcement;
    try {
      announcement = JSON.parse(packet.payload.toString()) as Announcement;
    } catch {
      return; // not ours: $SYS/sub/+ is refused to clients, so only a foreign broker
    }
    const { clientId, subs } = announcement;
    if (typeof clientId !== "string" || !Array.isArray(subs)) return;
    for (const trie of this.targets()) this.applyTo(trie, packet.topic, clientId, subs);
  }

  private applyTo(
    trie: QlobberSub,
    topic: string,
    clientId: string,
    subs: Announcement["subs"],
  ): void {
    for (const sub of subs) {
      if (topic === ADDED && (sub.qos ?? 0) > 0) {
        trie.add(sub.topic, {
          clientId,
          topic: sub.topic,
          qos: sub.qos as number,
          rh: sub.rh,
          rap: sub.rap,
          nl: sub.nl,
        });
      } else {
        trie.remove(sub.topic, { clientId, topic: sub.topic });
      }
    }
  }
}
