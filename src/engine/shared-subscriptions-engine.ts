import { randomBytes } from "node:crypto";
import type { Aedes, AedesPublishPacket, Client, PublishPacket, Subscription } from "aedes";
import { Packr, Unpackr } from "msgpackr";
import { ReasonCode } from "../errors.js";
import type { Logger } from "../observability/logger.js";
import { type Delivery, memberToken } from "../shared-subscriptions/group-store.js";
import type { MemberLinks, SharedDispatcher } from "../shared-subscriptions/shared-dispatcher.js";
import { isSharedFilter } from "../shared-subscriptions/shared-filter.js";
import {
  broadcastFrom,
  type DeliverFunction,
  heldFilters,
  nextMessageId,
  sessionTermsOf,
  subscribeToTopic,
} from "./aedes-internals.js";
import type { Emitter } from "./emitters.js";
import { decodeEnvelope, encodeEnvelope } from "./envelope.js";
import type { BrokerHooks } from "./hook-adapter.js";
import type { InboundReservations } from "./inbound-qos2.js";
import {
  Packet,
  SHARED_DELIVERY_PREFIX,
  type StoredPacket,
  sharedDeliveryBrokerId,
} from "./persistence-types.js";

/** Where a node receives the deliveries other nodes assign to its members. */
const DELIVERIES_TOPIC = "$SYS/sluice/share/deliver/";
/** Where nodes tell each other that a group's members changed. */
const CHANGED_TOPIC = "$SYS/sluice/share/changed";
/** Sluice's own topics: never matched against shared groups. */
const INTERNAL_PREFIX = "$SYS/sluice/";

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/** A forwarded delivery on the wire between nodes. */
interface ForwardedDelivery {
  g: string;
  c: string;
  t: string;
  e: string;
  /** Absent from a node that predates origins. */
  o?: string;
  m: Buffer;
}

/** What aedes' client holds that the deliveries use. */
interface MemberClient {
  id: string;
  closed: boolean;
  clean: boolean;
  subscriptions: Record<
    string,
    (Subscription & { si?: number; rap?: boolean; func: DeliverFunction }) | undefined
  >;
  deliver0: DeliverFunction;
  deliverQoS: DeliverFunction;
  _parser?: { on(event: "packet", listener: (packet: AckPacket) => void): void };
}

interface AckPacket {
  cmd: string;
  messageId?: number;
}

/** A member connection of this node. */
interface MemberConnection {
  readonly client: Client & MemberClient;
  readonly token: string;
  /** Deliveries written with a packet id, waiting for PUBACK (QoS 1) or PUBREC (QoS 2). */
  readonly awaiting: Map<number, () => void>;
}

type Done = (error?: Error) => void;

/** The persistence's removal of a session's subscriptions (memory and Redis alike). */
interface SessionSubscriptions {
  /** Resolves with the filters the session held. */
  cleanSubscriptions(client: { id: string }): Promise<string[]>;
  /** The origins of the shared deliveries the session PUBREC'd lately (a store that keeps them). */
  sharedReleased?(clientId: string): Promise<Set<string>>;
}
type AuthorizeSubscribe = BrokerHooks["authorizeSubscribe"];

/**
 * Shared subscriptions (`$share/{group}/{filter}`) on aedes: aedes handles the SUBSCRIBE (rules,
 * stored subscription of a persistent session, SUBACK, restore at reconnect) as for any filter,
 * while the emitter holds no listener for it; membership follows aedes' events and the emitter's
 * removal of the subscription's listener (a departing connection's), and deliveries are written
 * to the member's connection through its own deliver functions (in-flight window, ACL on
 * forward, MQTT 5 delivery rules). What goes to which member is the dispatcher's.
 */
export class SharedSubscriptionsEngine implements MemberLinks {
  private broker: Aedes | undefined;
  private readonly connectionPrefix = randomBytes(6).toString("hex");
  private nextConnection = 0;
  private readonly tokens = new WeakMap<Client, string>();
  private readonly members = new Map<string, MemberConnection>();
  /** The listener aedes gave the emitter for each shared subscription, and whose it is. */
  private readonly listeners = new Map<DeliverFunction, { token: string; topic: string }>();
  /** Packets of shared deliveries: the MQTT 5 delivery leaves their identifiers as they are. */
  private readonly shared = new WeakSet<object>();

  constructor(
    private readonly dispatcher: SharedDispatcher,
    private readonly nodeId: string,
    private readonly log: Logger,
    /** Inbound QoS 2 reservations (over Redis, not on a Cluster): none in memory. */
    private readonly reservations?: InboundReservations,
  ) {}

  /**
   * Wraps the broker's authorizePublish hook: with a group spread by `hash_clientid`, each
   * message carries its publisher's id (aedes keeps it on the packet it emits).
   */
  observePublish<Result>(
    authorizePublish: (client: Client | null, packet: PublishPacket) => Result,
  ): (client: Client | null, packet: PublishPacket) => Result {
    return (client, packet) => {
      if (client !== null && this.dispatcher.needsPublisher) {
        (packet as PublishPacket & { clientId?: string }).clientId = client.id;
      }
      return authorizePublish(client, packet);
    };
  }

  /**
   * Wraps the broker's authorizeSubscribe hook: past `sharedSubscriptions.maxGroups`, a shared
   * subscription that would make a new group is refused (0x97) once the rules grant it.
   */
  observeSubscribe(authorizeSubscribe: AuthorizeSubscribe): AuthorizeSubscribe {
    return (client, subscription) => {
      const result = authorizeSubscribe(client, subscription);
      if (!isSharedFilter(subscription.topic)) return result;
      const room = (granted: Awaited<ReturnType<AuthorizeSubscribe>>) => {
        if (typeof granted !== "object" || granted === null) return granted;
        if (this.dispatcher.hasRoomFor(granted.topic)) return granted;
        this.log.warn(
          { event: "shared.group_quota", clientId: client.id, topic: granted.topic },
          "shared subscription refused: the cluster holds sharedSubscriptions.maxGroups groups",
        );
        return ReasonCode.QuotaExceeded;
      };
      return result instanceof Promise ? result.then(room) : room(result);
    };
  }

  /** Whether a packet being delivered is a shared subscription's delivery. */
  isSharedDelivery(packet: object): boolean {
    return this.shared.has(packet);
  }

  /**
   * The emitter aedes gets: shared filters take no listener, their removal is a member leaving,
   * and each message published on this node is also offered to the shared groups (the publish
   * completes, and so the PUBACK waits, until QoS 1/2 assignments are kept).
   */
  wrap(emitter: Emitter): Emitter {
    const on = emitter.on.bind(emitter);
    const removeListener = emitter.removeListener.bind(emitter);
    const emit = emitter.emit.bind(emitter);
    const engine = this;
    type Listener = Parameters<Emitter["on"]>[1];
    emitter.on = function onShared(topic: string, listener: Listener, done?: () => void) {
      if (!isSharedFilter(topic)) return on(topic, listener, done);
      if (done) setImmediate(done);
      return emitter;
    } as Emitter["on"];
    emitter.removeListener = function removeShared(
      topic: string,
      listener: Listener,
      done?: () => void,
    ) {
      if (!isSharedFilter(topic)) return removeListener(topic, listener, done);
      engine.listenerRemoved(listener as unknown as DeliverFunction);
      if (done) setImmediate(done);
      return emitter;
    } as Emitter["removeListener"];
    emitter.emit = function emitShared(packet: AedesPublishPacket, done?: Done) {
      const { topic } = packet;
      if (!engine.dispatcher.active || topic.startsWith(INTERNAL_PREFIX)) return emit(packet, done);
      const publisherId = (packet as { clientId?: string }).clientId;
      const reserved = engine.reservations?.of(publisherId, packet.qos, packet.payload);
      const assigned = engine.dispatcher.publish(
        { topic, qos: packet.qos, publisherId, reserved },
        () => encodeEnvelope("", packet),
      );
      if (assigned === undefined) return emit(packet, done);
      if (reserved !== undefined) {
        // Its publish waits for the replicas to hold what was written for it (inbound-qos2.ts),
        // the group entries too: so it asks once they are answered.
        assigned.then(
          () => emit(packet, done),
          (error: Error) => done?.(error),
        );
        return emitter;
      }
      let remaining = 2;
      let failure: Error | undefined;
      const settle = (error?: Error): void => {
        if (error) failure ??= error;
        if (--remaining === 0) done?.(failure);
      };
      emit(packet, settle);
      assigned.then(() => settle(), settle);
      return emitter;
    } as Emitter["emit"];
    return emitter;
  }

  /** Follows aedes' subscriptions and this node's share of the cluster's deliveries. */
  async install(broker: Aedes): Promise<void> {
    this.broker = broker;
    (broker as Aedes & { sharedSubscriptions?: boolean }).sharedSubscriptions = true;
    broker.on("subscribe", (subscriptions, client) => {
      const topics = subscriptions
        .filter((s) => isSharedFilter(s.topic) && s.qos < 128)
        .map((s) => s.topic);
      if (topics.length > 0) this.join(client, topics);
    });
    broker.on("clientReady", (client) => {
      // Every CONNECT passes here: a restored session's shared filters, allocating nothing for
      // the clients (nearly all) that hold none.
      let topics: string[] | undefined;
      for (const topic in heldFilters(client)) {
        if (!isSharedFilter(topic)) continue;
        topics ??= [];
        topics.push(topic);
      }
      if (topics !== undefined) this.join(client, topics);
    });
    broker.on("unsubscribe", (topics, client) => {
      const shared = topics.filter(isSharedFilter);
      const token = this.tokens.get(client);
      if (shared.length > 0 && token !== undefined) this.leave(client, token, shared, true);
    });
    await subscribeToTopic(broker, `${DELIVERIES_TOPIC}${this.nodeId}`, (payload) => {
      let forwarded: ForwardedDelivery;
      try {
        forwarded = unpackr.unpack(payload) as ForwardedDelivery;
      } catch (err) {
        this.log.warn({ event: "shared.bad_forward", err }, "unreadable shared delivery ignored");
        return;
      }
      this.dispatcher.receive(forwarded.g, {
        member: forwarded.c,
        token: forwarded.t,
        entryId: forwarded.e,
        origin: forwarded.o ?? forwarded.e,
        message: forwarded.m,
      });
    });
    await subscribeToTopic(broker, CHANGED_TOPIC, () => this.dispatcher.changed());
    this.followSessionEnds(broker);
    this.dispatcher.start(this);
  }

  /**
   * A session's subscriptions are dropped by a clean start that discards it and when it expires
   * (on this node or, in a cluster, on whichever node's timer fires): its shared groups are
   * left then, or a group would keep an ended session registered, and fill its backlog for it.
   */
  private followSessionEnds(broker: Aedes): void {
    const persistence = (broker as unknown as { persistence: SessionSubscriptions }).persistence;
    const clean = persistence.cleanSubscriptions.bind(persistence);
    persistence.cleanSubscriptions = async (client) => {
      const held = await clean(client);
      const shared = held.filter(isSharedFilter);
      if (shared.length === 0) return held;
      this.dispatcher
        .sessionEnded(client.id, shared)
        .catch((err: unknown) =>
          this.log.warn(
            { event: "shared.leave_failed", err, clientId: client.id },
            "could not leave the shared groups of an ended session",
          ),
        );
      return held;
    };
  }

  deliver(delivery: Delivery, topic: string, origin: string, acknowledged: () => void): boolean {
    const connection = this.members.get(delivery.token);
    const broker = this.broker;
    if (connection === undefined || broker === undefined) return false;
    const { client, awaiting } = connection;
    const subscription = client.subscriptions[topic];
    if (client.closed || subscription === undefined) return false;
    const message = decodeEnvelope(delivery.message).msg as unknown as AedesPublishPacket;
    if (message.messageExpiry !== undefined && message.messageExpiry <= Date.now()) {
      acknowledged();
      return true;
    }
    const qos = Math.min(message.qos, subscription.qos) as 0 | 1 | 2;
    const si = subscription.si;
    // A Topic Alias is its publisher's connection's; a node of an earlier version sends a
    // resolved one as null, which the member's writer would take for an alias.
    const properties = withoutTopicAlias(message.properties);
    const packet = new Packet({
      cmd: "publish",
      topic: message.topic,
      payload: message.payload,
      qos,
      retain: subscription.rap === true && message.retain,
      dup: false,
      // Marks it for the persistence, which then keeps its PUBREL and notes its origin.
      brokerId:
        origin === "" ? `${SHARED_DELIVERY_PREFIX}${broker.id}` : sharedDeliveryBrokerId(origin),
      ...(message.messageExpiry === undefined ? {} : { messageExpiry: message.messageExpiry }),
      ...(si === undefined
        ? properties === undefined
          ? {}
          : { properties }
        : { properties: { ...properties, subscriptionIdentifier: si } }),
    } as StoredPacket) as unknown as AedesPublishPacket;
    this.shared.add(packet);
    if (qos === 0) {
      client.deliver0(packet, acknowledged);
      return true;
    }
    const messageId = nextMessageId(client);
    packet.messageId = messageId;
    awaiting.set(messageId, acknowledged);
    client.deliverQoS(packet, noop);
    return true;
  }

  async released(clientId: string): Promise<ReadonlySet<string>> {
    const persistence = (this.broker as unknown as { persistence?: SessionSubscriptions })
      ?.persistence;
    return (await persistence?.sharedReleased?.(clientId)) ?? new Set();
  }

  isLive(token: string): boolean {
    const connection = this.members.get(token);
    return connection !== undefined && !connection.client.closed;
  }

  forward(nodeId: string, group: string, delivery: Delivery): void {
    const broker = this.broker;
    if (broker === undefined) return;
    const wire: ForwardedDelivery = {
      g: group,
      c: delivery.member,
      t: delivery.token,
      e: delivery.entryId,
      o: delivery.origin,
      m: delivery.message,
    };
    broadcastFrom(broker, `${DELIVERIES_TOPIC}${nodeId}`, packr.pack(wire));
  }

  announce(_group: string): void {
    if (this.broker) broadcastFrom(this.broker, CHANGED_TOPIC, Buffer.alloc(0));
  }

  private join(aedesClient: Client, topics: string[]): void {
    const client = aedesClient as Client & MemberClient;
    if (client.closed) return;
    let token = this.tokens.get(client);
    if (token === undefined) {
      this.nextConnection++;
      const connection = `${this.connectionPrefix}-${this.nextConnection}`;
      token = memberToken(this.nodeId, connection, sessionTermsOf(client).persists);
      this.tokens.set(client, token);
      const member: MemberConnection = { client, token, awaiting: new Map() };
      this.members.set(token, member);
      this.watchAcknowledgements(member);
    }
    for (const topic of topics) {
      const listener = client.subscriptions[topic]?.func;
      if (listener !== undefined) this.listeners.set(listener, { token, topic });
    }
    this.dispatcher
      .join(client.id, token, topics)
      .catch((err: unknown) =>
        this.log.warn(
          { event: "shared.join_failed", err, clientId: client.id },
          "could not join a shared group: the client is disconnected to subscribe again",
        ),
      );
  }

  /** A departing connection's shared subscription (or one replaced by a new SUBSCRIBE). */
  private listenerRemoved(listener: DeliverFunction): void {
    const held = this.listeners.get(listener);
    if (held === undefined) return;
    this.listeners.delete(listener);
    const connection = this.members.get(held.token);
    if (connection === undefined) return;
    const { client } = connection;
    // A session that ends with its connection no longer holds the group; one that persists does.
    const unregister = client.closed && !sessionTermsOf(client).persists;
    this.leave(client, held.token, [held.topic], unregister);
  }

  private leave(client: Client, token: string, topics: string[], unregister: boolean): void {
    const connection = this.members.get(token);
    if (connection?.client.closed) {
      // Its deliveries are moved to other members: nothing it acknowledges now counts.
      connection.awaiting.clear();
      let holdsMore = false;
      for (const held of this.listeners.values()) if (held.token === token) holdsMore = true;
      if (!holdsMore) this.members.delete(token);
    }
    this.dispatcher
      .leave(client.id, token, topics, unregister)
      .catch((err: unknown) =>
        this.log.warn(
          { event: "shared.leave_failed", err, clientId: client.id },
          "could not leave a shared group now: its messages move once the node sees the member gone",
        ),
      );
  }

  private watchAcknowledgements(member: MemberConnection): void {
    const parser = member.client._parser;
    if (typeof parser?.on !== "function") {
      throw new TypeError(
        "aedes client has an unexpected shape: shared deliveries cannot be acknowledged",
      );
    }
    parser.on("packet", (packet) => {
      // QoS 2: PUBREC says the member has the message (what follows is between the two).
      if (packet.cmd !== "puback" && packet.cmd !== "pubrec") return;
      const id = packet.messageId;
      if (id === undefined) return;
      const acknowledged = member.awaiting.get(id);
      if (acknowledged === undefined) return;
      member.awaiting.delete(id);
      acknowledged();
    });
  }
}

function noop(): void {}

/** `properties` without a `topicAlias` member (a copy, only when it has one). */
function withoutTopicAlias(
  properties: AedesPublishPacket["properties"],
): AedesPublishPacket["properties"] {
  if (properties === undefined || !("topicAlias" in properties)) return properties;
  const { topicAlias: _, ...rest } = properties;
  return rest;
}
