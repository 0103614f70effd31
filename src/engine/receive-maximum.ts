import type { Aedes, Client, PublishPacket } from "aedes";
import { PublishDeniedError, ReasonCode } from "../errors.js";
import { closeWithWill } from "./aedes-internals.js";

type MaybePromise<T> = T | Promise<T>;
type AuthorizePublish = (client: Client | null, packet: PublishPacket) => MaybePromise<void>;
type PublishDone = (error?: Error) => void;
type Publish = (packet: PublishPacket, client: Client | null, done: PublishDone) => void;

/** The QoS 1/2 PUBLISHes of one MQTT 5 client that the node has not acknowledged yet. */
interface InboundWindow {
  /** QoS 1: from receipt until handed on (the PUBACK is written then). */
  qos1: number;
  /** QoS 2 packet ids: from receipt until PUBREL (a DUP of one held takes no second slot). */
  qos2: Set<number>;
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
   * Frees a QoS 1 slot when aedes has handed the PUBLISH on: its PUBACK is written in the same
   * callback (Sluice's patch acknowledges after the publish).
   */
  install(broker: Aedes): void {
    const windows = this.windows;
    const engine = broker as unknown as { publish: Publish };
    const publish = engine.publish;
    engine.publish = function publishFreeingSlot(packet, client, done) {
      const window = packet.qos === 1 && client?.version === 5 ? windows.get(client) : undefined;
      if (window === undefined) return publish.call(this, packet, client, done);
      publish.call(this, packet, client, (error) => {
        if (window.qos1 > 0) window.qos1--;
        done(error);
      });
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
      const id = packet.messageId ?? 0;
      const qos2 = packet.qos === 2;
      if (!(qos2 && window.qos2.has(id))) {
        if (window.qos1 + window.qos2.size >= this.maximum)
          return this.exceeded(client, window, packet);
        if (qos2) window.qos2.add(id);
        else window.qos1++;
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
    const window: InboundWindow = { qos1: 0, qos2: new Set() };
    this.windows.set(client, window);
    const parser = (client as Client & { _parser?: PacketSource })._parser;
    if (typeof parser?.on !== "function") {
      throw new TypeError("aedes client has an unexpected shape: no receive window possible");
    }
    parser.on("packet", (packet) => {
      if (packet.cmd === "pubrel") window.qos2.delete(packet.messageId ?? 0);
    });
    return window;
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
  if (packet.qos === 2) window.qos2.delete(packet.messageId ?? 0);
  else if (window.qos1 > 0) window.qos1--;
}
