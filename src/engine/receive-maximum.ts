import type { Aedes, Client, PublishPacket } from "aedes";
import { PublishDeniedError, ReasonCode } from "../errors.js";
import { closeWithWill } from "./aedes-internals.js";

type MaybePromise<T> = T | Promise<T>;
type AuthorizePublish = (client: Client | null, packet: PublishPacket) => MaybePromise<void>;
type PublishedDone = (error: Error | null) => void;
/** aedes' `published` hook: called once a PUBLISH is handed on, before its acknowledgement. */
type Published = (packet: PublishPacket, client: Client | null, done: PublishedDone) => void;

/** The QoS 1/2 PUBLISHes of one MQTT 5 client that the node has not acknowledged yet. */
interface InboundWindow {
  /** QoS 1: from receipt until handed on (the PUBACK is written then). */
  qos1: number;
  /**
   * QoS 2 packet ids: from receipt until PUBREL (a DUP of one held takes no second slot); made,
   * with the PUBREL listener, at the client's first QoS 2 PUBLISH.
   */
  qos2: Set<number> | undefined;
  /** Set once the window was exceeded: the DISCONNECT being sent. */
  closing?: Promise<void>;
}

export interface ReceiveMaximumEvents {
  /** A client sent more unacknowledged QoS 1/2 PUBLISHes than the Receive Maximum. */
  onExceeded(client: Client): void;
}

/** A PUBLISH past the Receive Maximum: the connection is closed with DISCONNECT 0x93 first. */
export class ReceiveMaximumExceededError extends PublishDeniedError {
  constructor(topic: string) {
    super(topic, "RECEIVE_MAXIMUM_EXCEEDED", ReasonCode.ReceiveMaximumExceeded);
  }
}

function isPromise<T>(value: MaybePromise<T>): value is Promise<T> {
  return typeof (value as Promise<T> | undefined)?.then === "function";
}

/**
 * The node's Receive Maximum for MQTT 5 publishers (`mqtt5.receiveMaximum`, advertised in the
 * CONNACK): a client with more QoS 1 and 2 PUBLISHes unacknowledged than that is disconnected
 * with 0x93 [MQTT-3.3.4-9]. A QoS 1 PUBLISH counts from its receipt until it is handed on, when
 * the PUBACK is written (after Redis answered); a QoS 2 one until its PUBREL. A refused one
 * (PUBACK/PUBREC >= 0x80) frees its slot at once [MQTT-4.9.0-2]. A client that keeps to the
 * advertised maximum never trips it: the node counts a PUBLISH later than the client does and
 * frees it no later than the client sees the acknowledgement.
 *
 * A window is made at a client's first QoS 1/2 PUBLISH, so idle and QoS 0 connections hold
 * none; MQTT 3.1.1 clients have no Receive Maximum and none is kept for them.
 */
export class ReceiveMaximum {
  private readonly windows = new WeakMap<Client, InboundWindow>();

  constructor(
    private readonly maximum: number,
    private readonly events: ReceiveMaximumEvents,
  ) {}

  /**
   * Frees a QoS 1 slot when aedes has handed the PUBLISH on: its `published` hook runs then,
   * and the PUBACK is written in the callback it is given (Sluice's patch acknowledges after the
   * publish). A failed publish never gets there; it closes the connection, and the window with
   * it. A hook rather than a wrapper of each publish's callback: no closure per message.
   */
  install(broker: Aedes): void {
    const windows = this.windows;
    const engine = broker as unknown as { published: Published };
    const published = engine.published;
    engine.published = function publishedFreeingSlot(packet, client, done) {
      if (packet.qos === 1 && client !== null && client.version === 5) {
        const window = windows.get(client);
        if (window !== undefined && window.qos1 > 0) window.qos1--;
      }
      published.call(this, packet, client, done);
    };
  }

  /** Wraps the broker's authorizePublish hook, which aedes calls for each PUBLISH it reads. */
  observePublish(authorizePublish: AuthorizePublish): AuthorizePublish {
    return (client, packet) => {
      if (client === null || packet.qos === 0 || client.version !== 5) {
        return authorizePublish(client, packet);
      }
      const window = this.windows.get(client) ?? this.open(client);
      if (window.closing) return this.refuse(window.closing, packet);
      if (packet.qos === 2) {
        window.qos2 ??= this.heldQos2(client);
        const held = window.qos2;
        const id = packet.messageId ?? 0;
        if (!held.has(id)) {
          if (window.qos1 + held.size >= this.maximum) return this.exceeded(client, window, packet);
          held.add(id);
        }
      } else {
        if (window.qos1 + (window.qos2?.size ?? 0) >= this.maximum)
          return this.exceeded(client, window, packet);
        window.qos1++;
      }
      let result: MaybePromise<void>;
      try {
        result = authorizePublish(client, packet);
      } catch (error) {
        release(window, packet);
        throw error;
      }
      if (!isPromise(result)) return result;
      return result.catch((error: unknown) => {
        release(window, packet);
        throw error;
      });
    };
  }

  private open(client: Client): InboundWindow {
    const window: InboundWindow = { qos1: 0, qos2: undefined };
    this.windows.set(client, window);
    return window;
  }

  /**
   * The QoS 2 ids a client holds, each freed by its PUBREL. The parser's listener is added only
   * for a client that uses QoS 2: a second `packet` listener costs every packet the client
   * sends a copy of the listener list and a call.
   */
  private heldQos2(client: Client): Set<number> {
    const held = new Set<number>();
    const parser = (client as Client & { _parser?: PacketSource })._parser;
    if (typeof parser?.on !== "function") {
      throw new TypeError("aedes client has an unexpected shape: no receive window possible");
    }
    parser.on("packet", (packet) => {
      if (packet.cmd === "pubrel") held.delete(packet.messageId ?? 0);
    });
    return held;
  }

  private exceeded(client: Client, window: InboundWindow, packet: PublishPacket): Promise<void> {
    this.events.onExceeded(client);
    window.closing = closeWithWill(client, { reasonCode: ReasonCode.ReceiveMaximumExceeded });
    return this.refuse(window.closing, packet);
  }

  /** Refuses once the connection is closed: the acknowledgement aedes then writes goes nowhere. */
  private refuse(closing: Promise<void>, packet: PublishPacket): Promise<void> {
    return closing.then(() => {
      throw new ReceiveMaximumExceededError(packet.topic);
    });
  }
}

interface PacketSource {
  on(event: "packet", listener: (packet: { cmd: string; messageId?: number }) => void): void;
}

function release(window: InboundWindow, packet: PublishPacket): void {
  if (packet.qos === 2) window.qos2?.delete(packet.messageId ?? 0);
  else if (window.qos1 > 0) window.qos1--;
}
