import type { Aedes, AedesPublishPacket, Client, Subscription } from "aedes";
import {
  type DeliverFunction,
  observeQueueReads,
  type QueuedMessage,
  sessionTermsOf,
} from "./aedes-internals.js";
import { Fifo } from "./fifo.js";

export interface ResumeGateEvents {
  /** A resumed session's live deliveries, held while its queue was sent, went out after it. */
  onReleased(client: Client, held: number, alreadyQueued: number): void;
  /** Held deliveries dropped past the bound (a persistent session's QoS 1/2 stay queued). */
  onDropped(client: Client, count: number): void;
}

/** The parts of an aedes client the gate works on. */
interface GatedClient {
  deliver0: DeliverFunction;
  deliverQoS: DeliverFunction;
  connected: boolean;
  closed: boolean;
}

interface Held {
  /** The delivery function the gate held it from (what it goes to on release). */
  deliver: DeliverFunction;
  packet: AedesPublishPacket;
}

/** One resuming connection's gate: what it holds, and what its stored queue held. */
interface Gate {
  /** Released: passes everything on. */
  open: boolean;
  held: Fifo<Held>;
  /** The stored queue sent at CONNECT (its messages' refs made only if anything was held). */
  queued: readonly QueuedMessage[] | undefined;
  /** The gate's own deliver functions, as set on the client last. */
  deliver0: DeliverFunction | undefined;
  deliverQoS: DeliverFunction | undefined;
}

/**
 * A persistent session that resumes gets its subscriptions back before its stored queue is sent
 * (aedes' CONNECT: restoreSubs, ..., emptyQueue), so a live message could overtake the queue
 * (order per publisher and topic, [MQTT-4.6.0-6]), and one published as it resumes reaches it
 * both from the queue and live (aedes enqueues a message for a persistent session before it
 * emits it): a QoS 2 message twice, under two packet ids [MQTT-4.3.3-2].
 *
 * So a connection with Clean Start 0 that gets subscriptions back has its live deliveries held
 * from the first restored subscription until aedes reports it ready ('clientReady', after the
 * queue is written); then they go out in the order they came, except those the queue held (same
 * broker id and counter: the same message). A held one that the queue lacks was enqueued after
 * the queue was read, so after everything the queue held from its publisher: the order stands.
 * A held delivery reports itself done at once, as the in-flight window's waiting ones do.
 *
 * Hooked like the in-flight window, on the client's own deliver functions when a subscription is
 * authorized, but as the innermost observer: each restored subscription's authorization covers
 * the functions again if an outer observer wrapped them since, so a held delivery goes through
 * the window (and the rest) only when released.
 */
export class ResumeGate {
  private readonly gates = new WeakMap<Client, Gate>();

  constructor(
    private readonly maxHeld: number,
    private readonly events: ResumeGateEvents,
  ) {}

  /** Follows the broker's queue reads at CONNECT and its clients getting ready. */
  install(broker: Aedes): void {
    observeQueueReads(broker, (client, packets) => {
      const gate = this.gates.get(client);
      if (gate !== undefined) gate.queued = packets;
    });
    broker.on("clientReady", (client) => this.release(client));
  }

  /** Wraps the broker's authorizeSubscribe hook (innermost): a resume's subscriptions hold. */
  observeSubscribe<Result>(
    authorizeSubscribe: (client: Client, subscription: Subscription) => Result,
  ): (client: Client, subscription: Subscription) => Result {
    return (client, subscription) => {
      const gated = client as unknown as GatedClient;
      let gate = this.gates.get(client);
      if (gate === undefined && !gated.connected && !sessionTermsOf(client).cleanStart) {
        gate = {
          open: false,
          held: new Fifo(),
          queued: undefined,
          deliver0: undefined,
          deliverQoS: undefined,
        };
        this.gates.set(client, gate);
      }
      if (gate !== undefined) this.cover(gated, gate);
      return authorizeSubscribe(client, subscription);
    };
  }

  /** Puts the gate in front of the client's deliver functions, unless it is there already. */
  private cover(client: GatedClient, gate: Gate): void {
    if (typeof client.deliver0 !== "function" || typeof client.deliverQoS !== "function") {
      throw new TypeError("aedes client has an unexpected shape: no resume gate possible");
    }
    if (client.deliver0 !== gate.deliver0) {
      gate.deliver0 = this.holding(client, gate, client.deliver0);
      client.deliver0 = gate.deliver0;
    }
    if (client.deliverQoS !== gate.deliverQoS) {
      gate.deliverQoS = this.holding(client, gate, client.deliverQoS);
      client.deliverQoS = gate.deliverQoS;
    }
  }

  private holding(client: GatedClient, gate: Gate, deliver: DeliverFunction): DeliverFunction {
    return (packet, done) => {
      if (gate.open) return deliver(packet, done);
      gate.held.push({ deliver, packet });
      if (gate.held.length > this.maxHeld) {
        gate.held.take();
        this.events.onDropped(client as unknown as Client, 1);
      }
      // aedes' own deliveries answer on a later turn too: mqemitter must not recurse per message
      setImmediate(done);
    };
  }

  /** The queue is written: what was held goes out, in order, but for what the queue held. */
  private release(client: Client): void {
    const gate = this.gates.get(client);
    if (gate === undefined) return;
    this.gates.delete(client);
    gate.open = true;
    const { held } = gate;
    const count = held.length;
    const queued = count > 0 && gate.queued !== undefined ? queuedRefs(gate.queued) : undefined;
    // The gate stays in the subscriptions' deliver functions, passing on: it keeps nothing.
    gate.queued = undefined;
    let alreadyQueued = 0;
    while (held.length > 0) {
      const { deliver, packet } = held.take() as Held;
      if (queued?.has(refOf(packet))) {
        alreadyQueued++;
        continue;
      }
      deliver(packet, noop);
    }
    if (count > 0) this.events.onReleased(client, count, alreadyQueued);
  }
}

/** A message's identity across nodes: the broker that took it in, and its counter there. */
function refOf(packet: QueuedMessage): string {
  return `${packet.brokerId}:${packet.brokerCounter}`;
}

function queuedRefs(packets: readonly QueuedMessage[]): Set<string> {
  const refs = new Set<string>();
  for (const packet of packets) {
    if (packet.cmd === "publish" && packet.brokerId !== undefined) refs.add(refOf(packet));
  }
  return refs;
}

function noop(): void {}
