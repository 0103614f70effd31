import type { Aedes, AedesOptions, AedesPublishPacket, Client } from "aedes";

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

/** The broker a client belongs to (aedes sets it; its types do not show it). */
export function brokerOf(client: Client): Aedes {
  return (client as Client & { broker: Aedes }).broker;
}

/** A QoS 0 message from the node itself, to every node (this one included) in a cluster. */
export function broadcastFrom(broker: Aedes, topic: string, payload: Buffer): void {
  broker.publish({ cmd: "publish", topic, payload, qos: 0, retain: false, dup: false }, () => {});
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
    const { reasonCode, serverReference } = reason;
    const properties = serverReference === undefined ? undefined : { serverReference };
    client.disconnect({ reasonCode, ...(properties ? { properties } : {}) }, () => resolve());
  });
}

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
