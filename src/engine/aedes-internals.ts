import type { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";
import type { Aedes, AedesOptions, AedesPublishPacket, Client, PublishPacket } from "aedes";
import type { Packet } from "mqtt-packet";

/**
 * Every read or write of aedes state that its public API does not offer, in one place, so an
 * engine upgrade has one file to audit. Tests exercise each of these through real clients.
 */

/**
 * Options that exist only with Sluice's patch to aedes (patches/aedes+*.patch, applied by
 * patch-package on install).
 */
export interface PatchedAedesOptions extends AedesOptions {
  /** Whether a clean-session-0 client resumes a stored session, for the CONNACK flag. */
  sessionPresent?(client: Client): boolean;
  /**
   * false turns off aedes' takeover gossip (a node closes its client when another announces one
   * with the same id), for a cluster that fences ownership itself.
   */
  closeOnPeerConnect?: boolean;
  /**
   * Whether a connecting client may be registered (which closes the one listed under its id);
   * one refused is closed instead, before its CONNACK.
   */
  mayRegister?(client: Client): boolean;
}

interface AedesWithInternals {
  clients: Record<
    string,
    Client & { subscriptions: Record<string, unknown>; _disconnected: boolean }
  >;
}

const internals = (broker: Aedes): AedesWithInternals => broker as unknown as AedesWithInternals;

/** MQTT 5's "never expires" Session Expiry Interval (0xFFFFFFFF seconds). */
const NEVER_EXPIRES = 4_294_967_295;

/**
 * What a connecting client's CONNECT says of its session, read from aedes' client. aedes 2
 * makes `clean` "the session ends with the connection" for MQTT 5 (Session Expiry Interval 0)
 * and keeps Clean Start in `_cleanStart`; for MQTT 3.1.1 `clean` is both.
 */
export function sessionTermsOf(client: Client): {
  cleanStart: boolean;
  persists: boolean;
  expirySeconds: number | undefined;
} {
  const v5 = client as Client & { _cleanStart?: boolean; sessionExpiryInterval?: number };
  if (client.version !== 5) {
    return { cleanStart: client.clean, persists: !client.clean, expirySeconds: undefined };
  }
  const cleanStart = v5._cleanStart === true;
  const expirySeconds = Math.min(v5.sessionExpiryInterval ?? 0, NEVER_EXPIRES);
  // An ephemeral session (see isEphemeralSession) leaves nothing to expire if its node dies.
  const kept = cleanStart && expirySeconds === 0 ? undefined : expirySeconds;
  return { cleanStart, persists: expirySeconds > 0, expirySeconds: kept };
}

/**
 * An MQTT 5 session that was never stored: Clean Start with a Session Expiry Interval of 0,
 * which no DISCONNECT may raise [MQTT-3.14.2-2]. It ends with its connection, leaving nothing.
 */
export function isEphemeralSession(client: Client): boolean {
  const v5 = client as Client & { _cleanStart?: boolean; _connectSessionExpiryInterval?: number };
  return client.version === 5 && v5._cleanStart === true && v5._connectSessionExpiryInterval === 0;
}

/** A departing MQTT 5 client's Session Expiry Interval, as its DISCONNECT may have changed it. */
export function sessionExpiryOf(client: Client): number {
  return (client as Client & { sessionExpiryInterval?: number }).sessionExpiryInterval ?? 0;
}

/** The broker a client belongs to (aedes sets it; its types do not show it). */
export function brokerOf(client: Client): Aedes {
  return (client as Client & { broker: Aedes }).broker;
}

/** A QoS 0 message from the node itself, to every node (this one included) in a cluster. */
export function broadcastFrom(broker: Aedes, topic: string, payload: Buffer): void {
  broker.publish({ cmd: "publish", topic, payload, qos: 0, retain: false, dup: false }, () => {});
}

/**
 * Subscribes the node itself to a topic of the cluster's pub/sub (Sluice's signals between
 * nodes); resolves once the subscription is in place. A handler that throws is reported by the
 * emitter's caller; the delivery is answered whatever happens.
 */
export function subscribeToTopic(
  broker: Aedes,
  topic: string,
  handle: (payload: Buffer) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    broker.subscribe(
      topic,
      (packet, done) => {
        const { payload } = packet;
        try {
          handle(Buffer.isBuffer(payload) ? payload : Buffer.from(String(payload)));
        } finally {
          done();
        }
      },
      (error?: Error) => (error ? reject(error) : resolve()),
    );
  });
}

/** A QoS 0 message published by the client's broker (to every node in a cluster). */
export function publishVia(client: Client, topic: string, payload: Buffer): void {
  broadcastFrom(brokerOf(client), topic, payload);
}

/** The clients registered (CONNACK sent or being sent) on this broker. */
export function registeredClients(broker: Aedes): Client[] {
  return Object.values(internals(broker).clients);
}

/**
 * Nodes of the cluster heard from within three heartbeats (aedes' own liveness rule), this one
 * included.
 */
export function liveBrokerCount(broker: Aedes, heartbeatIntervalMs: number): number {
  // aedes stores Date.now() numbers (its types say Date)
  const seen = broker.brokers as unknown as Readonly<Record<string, number>>;
  const now = Date.now();
  let count = 1;
  for (const id in seen) {
    if (id !== broker.id && (seen[id] ?? 0) + 3 * heartbeatIntervalMs >= now) count++;
  }
  return count;
}

/** The client registered on this broker under this id, if any. */
export function registeredClient(broker: Aedes, clientId: string): Client | undefined {
  return internals(broker).clients[clientId];
}

/** Whether a client holds at least one subscription on this broker. */
export function hasSubscriptions(client: Client): boolean {
  const subscriptions = (client as Client & { subscriptions?: Record<string, unknown> })
    .subscriptions;
  for (const _ in subscriptions) return true;
  return false;
}

/** The filters a connected client holds (aedes' live subscriptions, keyed by filter). */
export function heldFilters(client: Client): Readonly<Record<string, unknown>> {
  return (client as Client & { subscriptions: Record<string, unknown> }).subscriptions;
}

/** Subscriptions held by the clients connected to this broker. */
export function countLiveSubscriptions(broker: Aedes): number {
  let count = 0;
  const clients = internals(broker).clients;
  for (const id in clients) {
    const subscriptions = clients[id]?.subscriptions;
    if (subscriptions) for (const _ in subscriptions) count++;
  }
  return count;
}

/**
 * Closes a client's connection as if it had sent DISCONNECT: its will is discarded, not
 * published. Used when the broker moves clients away on purpose (drain), which is no failure
 * of the device and must not raise will-driven alarms across a fleet.
 */
export function closeWithoutWill(client: Client, reason?: DisconnectReason): Promise<void> {
  (client as Client & { _disconnected: boolean })._disconnected = true;
  return closeWithWill(client, reason);
}

/** Whether `packet` is the will of `client` being published (aedes passes the will object itself). */
export function isWillOf(client: Client | null, packet: object): boolean {
  return client !== null && (client as Client & { will?: object | null }).will === packet;
}

/** A will about to go out: the Will Delay Interval is a CONNECT property, never a PUBLISH one. */
export function dropWillDelay(will: object): void {
  const properties = (will as { properties?: { willDelayInterval?: number } }).properties;
  if (properties?.willDelayInterval !== undefined) delete properties.willDelayInterval;
}

/**
 * Why the server closes a connection: an MQTT 5 client is sent DISCONNECT with this reason
 * code (and Server Reference, for 0x9C) before the close; an MQTT 3.1.1 client is just closed.
 */
export interface DisconnectReason {
  reasonCode: number;
  serverReference?: string | undefined;
}

/** Closes a client's connection as a network failure would: its will is published. */
export function closeWithWill(client: Client, reason?: DisconnectReason): Promise<void> {
  return new Promise((resolve) => {
    if (reason === undefined || client.version !== 5) return client.close(() => resolve());
    lingerOnDestroy(client.conn as unknown as Duplex);
    const { reasonCode, serverReference } = reason;
    const properties = serverReference === undefined ? undefined : { serverReference };
    client.disconnect({ reasonCode, ...(properties ? { properties } : {}) }, () => resolve());
  });
}

/** How long a connection closed with a DISCONNECT reads and discards what its client still sends. */
const DISCONNECT_LINGER_MS = 2_000;

/**
 * aedes destroys the socket right after writing a DISCONNECT. With bytes from the client still
 * unread (a publisher cut off mid-burst: 0x93, 0x96), the kernel then answers with a reset, which
 * can discard the DISCONNECT before the client reads it. So the next destroy ends the stream
 * instead (FIN after the DISCONNECT) and reads on, discarding, until the client closes too or
 * DISCONNECT_LINGER_MS pass.
 */
function lingerOnDestroy(conn: Duplex): void {
  if (typeof conn.end !== "function" || conn.destroyed) return;
  const destroy = conn.destroy;
  conn.destroy = function lingeringDestroy(this: Duplex, error?: Error) {
    conn.destroy = destroy;
    if (error !== undefined || conn.destroyed) return destroy.call(conn, error);
    const timer = setTimeout(() => destroy.call(conn), DISCONNECT_LINGER_MS);
    timer.unref();
    conn.once("close", () => clearTimeout(timer));
    conn.on("data", discard);
    conn.resume();
    conn.end();
    return conn;
  };
}

function discard(): void {}

/**
 * MQTT 5 Server Keep Alive [MQTT-3.2.2-21]: the keep-alive the client must use instead of its
 * own, sent in the CONNACK. Set while authenticating; aedes starts the keep-alive timer after.
 */
export function imposeServerKeepAlive(client: Client, seconds: number): void {
  (client as Client & { _serverKeepAlive?: number })._serverKeepAlive = seconds;
}

/**
 * A keep-alive timeout of an MQTT 5 client is answered with DISCONNECT 0x8D before the close
 * [MQTT-3.1.2-24] (aedes closes it at once, with a client error): the broker's
 * 'keepaliveTimeout' event comes just before that error, so the client's error listeners are
 * set aside for it; the disconnect closes the connection (the will is published).
 */
export function disconnectOnKeepaliveTimeout(broker: Aedes, reasonCode: number): void {
  broker.on("keepaliveTimeout", (client: Client) => {
    if (client.version !== 5 || client.closed) return;
    client.removeAllListeners("error");
    client.on("error", () => {});
    client.disconnect({ reasonCode }, () => {});
  });
}

/** An emitter listener of aedes: what a subscription delivers through. */
export type DeliverFunction = (packet: AedesPublishPacket, done: () => void) => void;

/** One of aedes' live subscriptions of a client: the listener it holds on the emitter. */
export interface LiveSubscription {
  func: DeliverFunction;
}

/**
 * Takes a client's live subscriptions (by filter), leaving it none: aedes' own close path and
 * any UNSUBSCRIBE still being handled then find nothing of them to remove.
 */
export function takeSubscriptions(client: Client): Record<string, LiveSubscription> {
  const owner = client as Client & { subscriptions: Record<string, LiveSubscription> };
  const taken = owner.subscriptions;
  owner.subscriptions = Object.create(null) as Record<string, LiveSubscription>;
  return taken;
}

/**
 * What aedes announces when a clean session's subscriptions end with its connection: its
 * 'unsubscribe' event and the `$SYS/<broker>/new/unsubscribes` notice (a persistent session's
 * stay stored, and aedes announces nothing for them).
 */
export function announceUnsubscribes(client: Client, filters: string[]): void {
  const broker = brokerOf(client);
  broker.emit("unsubscribe", filters, client);
  broadcastFrom(
    broker,
    `$SYS/${broker.id}/new/unsubscribes`,
    Buffer.from(JSON.stringify({ clientId: client.id, subs: filters }), "utf8"),
  );
}

/** The next packet id of a client's outbound QoS 1/2 PUBLISHes, taken as aedes takes it. */
export function nextMessageId(client: Client): number {
  const owner = client as Client & { _nextId: number };
  const id = owner._nextId;
  owner._nextId = id >= 65535 ? 1 : id + 1;
  return id;
}

/** The part of a broker's persistence that records a client's outbound QoS 1/2 deliveries. */
export interface OutgoingStore {
  outgoingUpdate(client: Client, packet: AedesPublishPacket): Promise<void>;
  outgoingClearMessageId(client: Client, packet: AedesPublishPacket): Promise<unknown>;
}

/** The persistence of a client's broker (aedes sets it; its types do not show it). */
export function outgoingStore(client: Client): OutgoingStore {
  return (brokerOf(client) as Aedes & { persistence: OutgoingStore }).persistence;
}

/** The will a connected client left in its CONNECT, if any (aedes keeps it on the client). */
export function willOf(client: Client): { topic: string; payload: Buffer } | undefined {
  const will = (client as Client & { will?: { topic: string; payload: Buffer } | null }).will;
  return will ?? undefined;
}

/** A retained message from the node itself, stored in the node's (the cluster's) retained store. */
export function publishRetained(broker: Aedes, topic: string, payload: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    broker.publish({ cmd: "publish", topic, payload, qos: 1, retain: true, dup: false }, (error) =>
      error ? reject(error) : resolve(),
    );
  });
}

/** Topics of the retained messages that match `filter`, read from the node's retained store. */
export async function retainedTopics(broker: Aedes, filter: string): Promise<string[]> {
  const store = (
    broker as Aedes & {
      persistence: { createRetainedStream(f: string): AsyncIterable<{ topic: string }> };
    }
  ).persistence;
  const topics: string[] = [];
  for await (const packet of store.createRetainedStream(filter)) topics.push(packet.topic);
  return topics;
}

/**
 * When this node last heard each node's heartbeat (Date.now() ms), this one included; aedes
 * keeps the map and drops a node from it once its own will sweep finds the node dead.
 */
export function heartbeatsSeen(broker: Aedes): Readonly<Record<string, number>> {
  // aedes stores Date.now() numbers (its types say Date)
  return broker.brokers as unknown as Readonly<Record<string, number>>;
}

/**
 * Publishes a dead node's stored will the way aedes' will sweep does: through the broker's
 * authorizePublish hook with no client (Sluice's rules claim it cluster-wide there, or defer
 * a delayed one), then to the subscribers. Resolves false when the hook refused it.
 */
export function publishStoredWill(broker: Aedes, will: PublishPacket): Promise<boolean> {
  return new Promise((resolve, reject) => {
    broker.authorizePublish(null, will, (refusal) => {
      if (refusal) return resolve(false);
      broker.publish(will, (error) => (error ? reject(error) : resolve(true)));
    });
  });
}

/** A message of a session's stored queue, as the persistence reads it back. */
export interface QueuedMessage {
  cmd: string;
  brokerId?: string | undefined;
  brokerCounter?: number | undefined;
}

/**
 * Calls `observe` with each session queue the broker's persistence reads for a connecting client
 * (Sluice's patched emptyQueue reads it with `outgoingPackets(client)`), before aedes sends it.
 */
export function observeQueueReads(
  broker: Aedes,
  observe: (client: Client, packets: readonly QueuedMessage[]) => void,
): void {
  const persistence = (
    broker as Aedes & {
      persistence: { outgoingPackets?(client: Client): Promise<QueuedMessage[]> };
    }
  ).persistence;
  const read = persistence.outgoingPackets;
  if (typeof read !== "function") {
    throw new TypeError("the persistence reads no queue as an array (outgoingPackets)");
  }
  persistence.outgoingPackets = async (client) => {
    const packets = await read.call(persistence, client);
    observe(client, packets);
    return packets;
  };
}

/**
 * Puts `take` in front of aedes' handling of a client's parsed packets: a packet it takes
 * (returns true) never reaches aedes. `release()` gives aedes its own listener back (packets
 * parsed later go straight to it); `forward()` hands aedes a packet as if it had just been
 * parsed. Installed before aedes saw any packet, so aedes' listener is the only one.
 */
export function interceptPackets(
  client: Client,
  take: (packet: Packet) => boolean,
): { release(): void; forward(packet: Packet): void } {
  const parser = (client as unknown as { _parser: EventEmitter })._parser;
  const listeners = parser.listeners("packet") as Array<
    (this: EventEmitter, packet: Packet) => void
  >;
  const enqueue = listeners[0];
  if (listeners.length !== 1 || enqueue === undefined) {
    throw new TypeError("aedes client has an unexpected shape: its packets cannot be intercepted");
  }
  const intercept = (packet: Packet): void => {
    if (!take(packet)) enqueue.call(parser, packet);
  };
  parser.removeListener("packet", enqueue);
  parser.on("packet", intercept);
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      parser.removeListener("packet", intercept);
      parser.on("packet", enqueue);
    },
    forward(packet) {
      enqueue.call(parser, packet);
    },
  };
}

/**
 * The Authentication Method and Data the CONNACK of an enhanced authentication carries
 * [MQTT-4.12.0-5]; Sluice's patch to aedes adds them to a successful CONNACK.
 */
export function setConnackAuthentication(
  client: Client,
  properties: { authenticationMethod: string; authenticationData: Buffer },
): void {
  (client as Client & { _connackAuthentication?: object })._connackAuthentication = properties;
}
