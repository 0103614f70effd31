import { createRequire } from "node:module";
import type { Client } from "aedes";
import type { QlobberOptions } from "qlobber";

/** A packet as aedes stores it: the wire fields plus the broker's id and counter. */
export interface StoredPacket {
  cmd: string;
  brokerId: string;
  brokerCounter: number;
  topic?: string;
  payload?: Buffer;
  qos?: number;
  retain?: boolean;
  dup?: boolean;
  messageId?: number | undefined;
  clientId?: string;
}

/** What a client subscribed with: QoS and the MQTT 5 options aedes passes through. */
export interface SubscriptionOptions {
  qos: number;
  rh?: number | undefined;
  rap?: boolean | undefined;
  nl?: boolean | undefined;
  subscriptionIdentifier?: number | undefined;
}

export interface SubscriptionRequest extends SubscriptionOptions {
  topic: string;
}

/** The cap on each session's stored queue. */
export interface QueueLimits {
  /** Each session's queue holds at most this many messages, the oldest dropped past it. */
  maxQueuedPerClient: number;
  /** The oldest `dropped` messages of a client's queue went to make room. */
  onQueueFull(clientId: string, dropped: number): void;
}

/** A client as the persistence sees it: its id and, from aedes, whether its session is clean. */
export type ClientRef = Pick<Client, "id"> & { clean?: boolean };

/**
 * The broker id a shared subscription's delivery carries, before its origin (its group and
 * entry): such a delivery is not in its member's session queue (the group's queue holds it), but
 * once the member has PUBREC'd it the session keeps its PUBREL like any other [MQTT-4.4.0-1],
 * and its ref among the session's released shared deliveries. redis-persistence's pubrel-4.lua
 * spells it too.
 */
export const SHARED_DELIVERY_PREFIX = "$share/";

/** The broker id of a shared delivery from `origin` (`<group key>/<entry id>`). */
export function sharedDeliveryBrokerId(origin: string): string {
  return `${SHARED_DELIVERY_PREFIX}${origin}`;
}

/** The origin of a released shared delivery's ref (`$share/<origin>:0`), or undefined. */
export function originOfSharedRef(ref: string): string | undefined {
  if (!ref.startsWith(SHARED_DELIVERY_PREFIX)) return undefined;
  const colon = ref.lastIndexOf(":");
  return ref.slice(SHARED_DELIVERY_PREFIX.length, colon === -1 ? undefined : colon);
}

export function isSharedDelivery(packet: Pick<StoredPacket, "brokerId">): boolean {
  return typeof packet.brokerId === "string" && packet.brokerId.startsWith(SHARED_DELIVERY_PREFIX);
}

/** aedes' packet record (its types describe a namespace; the module is the constructor). */
export const Packet = createRequire(import.meta.url)("aedes-packet") as new (
  original: StoredPacket,
) => StoredPacket;

/**
 * `+` matches one level, an empty one too ([MQTT-4.7.1-3]): `a/+` matches `a/`. aedes' own
 * in-memory store leaves this off, so a retained message on `a/` never reached `a/+`.
 */
export const TOPIC_MATCHING: QlobberOptions = {
  separator: "/",
  wildcard_one: "+",
  wildcard_some: "#",
  match_empty_levels: true,
};
