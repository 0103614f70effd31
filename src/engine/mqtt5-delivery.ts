import type { AedesPublishPacket, Client, Subscription } from "aedes";
import mqttPacket, { type IConnectPacket, type IPublishPacket } from "mqtt-packet";
import { filterMatches } from "../protocol/topic-rules.js";
import { nextMessageId, outgoingStore } from "./aedes-internals.js";
import { variableByteIntegerSize } from "./mqtt-lengths.js";
import { propertiesLength as propertiesLengthOf } from "./publish-encoder.js";

export interface Mqtt5DeliveryEvents {
  /** A message was not sent to a client: its encoded PUBLISH exceeds the client's maximum. */
  onTooLarge(client: Client, size: number, maximum: number): void;
  /** A shared subscription's delivery: it carries that subscription's identifier alone. */
  isSharedDelivery?(packet: object): boolean;
}

type PublishProperties = NonNullable<AedesPublishPacket["properties"]>;
type Forward = (client: Client, packet: AedesPublishPacket) => AedesPublishPacket | null;

/** An outbound alias: `established` once a PUBLISH carrying topic and alias is surely written first. */
interface Alias {
  alias: number;
  established: boolean;
}

/** What a v5 connection asked of the node's PUBLISHes to it beyond aedes' own handling. */
interface Outbound {
  /** The client's Topic Alias Maximum (CONNECT); 0: no aliases. */
  aliasMaximum: number;
  aliases: Map<string, Alias> | undefined;
  /** Whether it ever subscribed with a Subscription Identifier (its messages then carry all). */
  identified: boolean;
  /** The last message sent it with all its identifiers: the other subscriptions' copies follow. */
  lastBrokerId: string | undefined;
  lastCounter: number;
}

interface DeliveringClient {
  clean: boolean;
  maximumPacketSize?: number | undefined;
  subscriptions: Record<string, { qos?: number; si?: number } | undefined>;
}

/**
 * MQTT 5's outbound rules for the node's PUBLISHes to a v5 client, which aedes 2.0.0-beta.1
 * stores but does not apply: its Maximum Packet Size, its Topic Alias Maximum, and every
 * Subscription Identifier of a message ([MQTT-3.3.4-4]). Its Receive Maximum bounds its
 * in-flight window (InflightWindows).
 *
 * Applied in authorizeForward, which aedes calls synchronously for every PUBLISH it is about to
 * send a client: live deliveries (whose returned packet it sends), retained messages on
 * SUBSCRIBE, and the stored queue at CONNECT (where it sends the packet it passed, a copy of
 * its own). A 3.1.1 client costs one comparison.
 */
export class Mqtt5Delivery {
  private readonly outbound = new WeakMap<Client, Outbound>();

  constructor(private readonly events: Mqtt5DeliveryEvents) {}

  /** Wraps preConnect: a v5 CONNECT's Topic Alias Maximum. */
  observeConnect<Result>(
    preConnect: (client: Client, packet: IConnectPacket) => Result,
  ): (client: Client, packet: IConnectPacket) => Result {
    return (client, packet) => {
      const aliasMaximum = packet.properties?.topicAliasMaximum ?? 0;
      if (packet.protocolVersion === 5 && aliasMaximum > 0) {
        this.outbound.set(client, {
          aliasMaximum,
          aliases: undefined,
          identified: false,
          lastBrokerId: undefined,
          lastCounter: 0,
        });
      }
      return preConnect(client, packet);
    };
  }

  /** Wraps authorizeSubscribe: notes a client that subscribes with a Subscription Identifier. */
  observeSubscribe<Result>(
    authorizeSubscribe: (client: Client, subscription: Subscription) => Result,
  ): (client: Client, subscription: Subscription) => Result {
    return (client, subscription) => {
      if ((subscription as { subscriptionIdentifier?: number }).subscriptionIdentifier) {
        const state = this.outbound.get(client);
        if (state) state.identified = true;
        else
          this.outbound.set(client, {
            aliasMaximum: 0,
            aliases: undefined,
            identified: true,
            lastBrokerId: undefined,
            lastCounter: 0,
          });
      }
      return authorizeSubscribe(client, subscription);
    };
  }

  /** Wraps the broker's authorizeForward with the outbound rules of v5 clients. */
  observeForward(authorizeForward: Forward): Forward {
    return (client, packet) => {
      if (client.version !== 5) return authorizeForward(client, packet);
      return this.forward(client, packet, authorizeForward);
    };
  }

  private forward(
    aedesClient: Client,
    packet: AedesPublishPacket,
    authorizeForward: Forward,
  ): AedesPublishPacket | null {
    const client = aedesClient as unknown as DeliveringClient;
    const state = this.outbound.get(aedesClient);
    const maximum = client.maximumPacketSize;
    if (state === undefined && maximum === undefined) return authorizeForward(aedesClient, packet);
    // A stored message sent again at CONNECT has its packet id; a live one gets it later.
    const resend = packet.messageId !== undefined;
    // aedes sends a live delivery at the QoS of the client's subscription to exactly its topic
    // if lower; with an alias it would look up no topic, so the copy is downgraded here.
    const exact = resend ? undefined : client.subscriptions[packet.topic];
    const qos =
      exact !== undefined && (exact.qos ?? 0) < packet.qos ? (exact.qos ?? 0) : packet.qos;

    let properties = packet.properties;
    // aedes sends a retained message on SUBSCRIBE (no broker id) with that SUBSCRIBE's identifier
    let single = false;
    if (state?.identified && packet.brokerId && !this.events.isSharedDelivery?.(packet)) {
      const { identifiers, matches } = identifiersOf(client, packet.topic);
      // Sluice's aedes sends a copy per matching subscription; a v5 client using identifiers
      // gets one, the first, carrying them all [MQTT-3.3.4-4] (mqemitter calls a message's
      // listeners one after another)
      if (matches > 1 && !resend) {
        if (state.lastBrokerId === packet.brokerId && state.lastCounter === packet.brokerCounter) {
          return null;
        }
        single = true;
      }
      properties = withIdentifiers(properties, identifiers);
    }
    // aedes writes a live delivery after a turn, in order, or, for a session's stored QoS 1/2
    // message, after the store answers: such a write may come after later ones, so it carries
    // the topic too and establishes nothing. A resend may not be written at all (expired).
    const inOrder = !resend && (packet.qos === 0 || client.clean || packet.retain);
    const alias = state && state.aliasMaximum > 0 ? aliasFor(state, packet.topic) : undefined;
    const topic = alias?.established && !resend ? "" : packet.topic;
    if (alias !== undefined || properties?.topicAlias !== undefined) {
      properties = { ...properties, topicAlias: alias?.alias };
    }

    if (maximum !== undefined) {
      const size = publishSize(topic, qos, properties, packet.payload);
      if (size > maximum) {
        // [MQTT-3.1.2-25] not sent, as if sent: a stored QoS 1/2 message leaves its queue
        this.events.onTooLarge(aedesClient, size, maximum);
        if (!resend && packet.qos > 0 && !client.clean) discardQueued(aedesClient, packet);
        return null;
      }
    }
    const forwarded = authorizeForward(aedesClient, packet);
    if (forwarded === null) return null;
    if (single && state !== undefined) {
      state.lastBrokerId = packet.brokerId;
      state.lastCounter = packet.brokerCounter;
    }
    if (alias !== undefined) {
      state?.aliases?.set(packet.topic, alias);
      if (inOrder) alias.established = true;
    }
    if (resend) {
      // aedes sends the packet it passed (its own copy of the stored one): the stored message
      // keeps its topic, and its properties are replaced, not changed
      forwarded.properties = properties;
      return forwarded;
    }
    return { ...forwarded, topic, qos, properties } as AedesPublishPacket;
  }
}

/** The alias a topic goes with, a new one while the client's maximum allows (none after). */
function aliasFor(state: Outbound, topic: string): Alias | undefined {
  state.aliases ??= new Map();
  const known = state.aliases.get(topic);
  if (known !== undefined) return known;
  // Aliases are never reassigned: a PUBLISH written late could then name the wrong topic.
  const next = state.aliases.size + 1;
  return next <= state.aliasMaximum ? { alias: next, established: false } : undefined;
}

/** The Subscription Identifiers of a client's subscriptions matching a topic, lowest first. */
function identifiersOf(
  client: DeliveringClient,
  topic: string,
): { identifiers: number[]; matches: number } {
  const identifiers: number[] = [];
  let matches = 0;
  for (const filter in client.subscriptions) {
    if (!filterMatches(filter, topic)) continue;
    matches++;
    const si = client.subscriptions[filter]?.si;
    if (si !== undefined && !identifiers.includes(si)) identifiers.push(si);
  }
  return { identifiers: identifiers.sort((a, b) => a - b), matches };
}

function withIdentifiers(
  properties: PublishProperties | undefined,
  identifiers: number[],
): PublishProperties | undefined {
  if (identifiers.length === 0 && properties?.subscriptionIdentifier === undefined) {
    return properties;
  }
  const subscriptionIdentifier =
    identifiers.length === 0 ? undefined : identifiers.length === 1 ? identifiers[0] : identifiers;
  return { ...properties, subscriptionIdentifier } as PublishProperties;
}

/** The encoded size of a v5 PUBLISH, as mqtt-packet's writer computes it. */
export function publishSize(
  topic: string,
  qos: number,
  properties: PublishProperties | undefined,
  payload: Buffer | string,
): number {
  const propertiesLength = propertiesLengthOf(properties);
  if (propertiesLength < 0) return generatedSize(topic, qos, properties, payload);
  const remaining =
    2 +
    Buffer.byteLength(topic) +
    (qos > 0 ? 2 : 0) +
    variableByteIntegerSize(propertiesLength) +
    propertiesLength +
    (typeof payload === "string" ? Buffer.byteLength(payload) : payload.length);
  return 1 + variableByteIntegerSize(remaining) + remaining;
}

/** Properties the encoder leaves to mqtt-packet are sized by mqtt-packet itself (rare). */
function generatedSize(
  topic: string,
  qos: number,
  properties: PublishProperties | undefined,
  payload: Buffer | string,
): number {
  const packet = { cmd: "publish", topic, qos, messageId: qos > 0 ? 1 : undefined, payload };
  return mqttPacket.generate({ ...packet, properties } as IPublishPacket, { protocolVersion: 5 })
    .length;
}

/**
 * Takes a persistent session's stored message out of its queue as if it had been sent: it is
 * given a packet id and acknowledged at once. aedes clears the id of the packet refused by
 * authorizeForward, which is given the same id here (else it would clear the first unsent).
 */
function discardQueued(client: Client, packet: AedesPublishPacket): void {
  const persistence = outgoingStore(client);
  const messageId = nextMessageId(client);
  packet.messageId = messageId;
  const sent = { ...packet, messageId };
  persistence
    .outgoingUpdate(client, sent)
    .then(() => persistence.outgoingClearMessageId(client, sent))
    .catch(() => {});
}
