import type { Aedes } from "aedes";
import type { Emitter } from "./emitters.js";

type Done = (error?: Error) => void;

/** What the fence reads of aedes' broker: its id, its message counter and its publish. */
interface PublishingBroker {
  id: string;
  counter: number;
  publish(packet: { qos?: number; messageId?: unknown }, client?: unknown, done?: Done): void;
}

/** What the fence reads of a message aedes emits (aedes-packet, clientId set by emitPacket). */
interface FencedMessage {
  qos?: number;
  clientId?: unknown;
  brokerId?: unknown;
  brokerCounter?: unknown;
}

/** The refusal of a publish that followed a failed one of the same connection. */
export class PublishFenced extends Error {
  override readonly name = "PublishFenced";
  constructor() {
    super("an earlier publish of this connection failed: it sends this one again after it");
  }
}

/** How long a failed connection's publishes still under way are refused. */
const FENCE_MS = 60_000;

/**
 * After a QoS 1/2 PUBLISH of a client fails, none of that client's QoS 1/2 PUBLISHes still
 * under way is handed to the emitter (its will is). aedes handles the packets of one read
 * concurrently and closes the connection at the first failure, unacknowledged; the client sends
 * it again, and after it every later one it has no acknowledgement for. A later one handed on
 * meanwhile (a Redis connection back between the two, a replica confirmation in a new epoch, a
 * channel that one PUBLISH is refused on) reached the subscribers before the failed one's
 * resend: out of the order the client published them in [MQTT-4.6.0-6]. Refused, it comes
 * again in order.
 *
 * Refused: a publish the failed connection starts afterwards, and one that reaches the emitter
 * afterwards whose packet aedes made before the failure (its `brokerCounter`; the client's next
 * connection publishes with later numbers). Not covered: a later publish whose emit had started
 * before the failure was known, and the copies aedes queues for offline sessions before it emits.
 */
export class PublishFence {
  /** Per client id: the broker's message counter at its failure, its connection, and when. */
  private readonly fenced = new Map<string, { upTo: number; connection: unknown; at: number }>();
  private sweeper: NodeJS.Timeout | undefined;
  private broker: PublishingBroker | undefined;

  /** Wraps the broker's publish: a client's failed QoS 1/2 publish fences that client. */
  install(aedes: Aedes): void {
    const broker = aedes as unknown as PublishingBroker;
    this.broker = broker;
    const publish = broker.publish.bind(broker);
    broker.publish = (packet, client, done) => {
      if (typeof client === "function") {
        publish(packet, client as Done);
        return;
      }
      const id = (client as { id?: unknown } | null | undefined)?.id;
      // A PUBLISH from the wire (a will, published with its client too, has no packet id)
      if (
        (packet.qos ?? 0) === 0 ||
        typeof packet.messageId !== "number" ||
        typeof id !== "string"
      ) {
        publish(packet, client, done);
        return;
      }
      // One the failed connection starts afterwards (a QoS 2 message's, after its duplicate check)
      if (this.fenced.size > 0 && this.fenced.get(id)?.connection === client) {
        done?.(new PublishFenced());
        return;
      }
      publish(packet, client, (error) => {
        if (error !== undefined && error !== null) this.fence(id, client);
        done?.(error);
      });
    };
  }

  /** Wraps an emitter: a fenced client's publish made before its failure is refused. */
  guard(emitter: Emitter): Emitter {
    const emit = emitter.emit.bind(emitter);
    emitter.emit = ((message: FencedMessage, done?: Done) => {
      if (this.fenced.size > 0 && this.refuses(message)) {
        done?.(new PublishFenced());
        return emitter;
      }
      return emit(message as Parameters<Emitter["emit"]>[0], done);
    }) as Emitter["emit"];
    return emitter;
  }

  /** Stops the sweep (the node is closing). */
  close(): void {
    clearInterval(this.sweeper);
    this.sweeper = undefined;
    this.fenced.clear();
  }

  private refuses(message: FencedMessage): boolean {
    const { clientId, brokerCounter } = message;
    if ((message.qos ?? 0) === 0 || typeof clientId !== "string") return false;
    const fence = this.fenced.get(clientId);
    return (
      fence !== undefined &&
      message.brokerId === this.broker?.id &&
      typeof brokerCounter === "number" &&
      brokerCounter <= fence.upTo
    );
  }

  private fence(clientId: string, connection: unknown): void {
    this.fenced.set(clientId, { upTo: this.broker?.counter ?? 0, connection, at: Date.now() });
    this.sweeper ??= setInterval(() => this.sweep(), FENCE_MS).unref();
  }

  private sweep(): void {
    const before = Date.now() - FENCE_MS;
    for (const [clientId, { at }] of this.fenced) if (at < before) this.fenced.delete(clientId);
    if (this.fenced.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }
}
