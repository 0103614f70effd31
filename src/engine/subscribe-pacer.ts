import type { Client, Subscription } from "aedes";
import { installReadGate, type ReadGate } from "./read-gate.js";

/**
 * SUBSCRIBE packets the node takes on per turn of the event loop, all clients together. In a
 * 2,000 x 100 storm (bench subscribe-storm, in memory) 64 gave a bystander p99 of 85 ms at
 * 40k subscriptions/s, 256 166 ms at 30k/s, no limit 760 ms at 24k/s: smaller turns also
 * leave less garbage to promote.
 */
const SUBSCRIBES_PER_TURN = 64;

interface WatchedParser {
  client: Client;
  /** What _newPacket was before the watch: the prototype's, or another layer's wrapper. */
  previous: () => boolean;
}

interface ParserShape {
  packet?: { cmd?: string };
  _newPacket(): boolean;
}

function parserOf(client: Client): ParserShape | undefined {
  const parser = (client as unknown as { _parser?: Partial<ParserShape> })._parser;
  return typeof parser?._newPacket === "function" ? (parser as ParserShape) : undefined;
}

/**
 * Spreads a subscribe storm over turns of the event loop, so that everything else a node does
 * (a bystander's QoS 1 PUBLISH, keep-alives, other clients' CONNECTs) waits one turn at most.
 *
 * A client re-subscribing after a reconnect sends its filters back to back, and a plant's PLCs
 * all do at once: aedes handles every SUBSCRIBE a socket read holds in that read, so one turn
 * took the SUBSCRIBEs of hundreds of sockets and a bystander's message waited behind them all
 * (p99 0.76 s with 2,000 clients x 100 filters). Past the turn's budget, a client's parser stops
 * at its next SUBSCRIBE (ReadGate: order kept, TCP slows the sender) and is resumed, in order of
 * arrival, on a later turn.
 *
 * A client gets its gate when its first SUBSCRIBE is parsed (watch(), at the hand-over to aedes):
 * connections that never subscribe carry none. Not at its first authorization: aedes holds the
 * packets parsed while a CONNECT is handled (the patched client, lib/client.js dispatch), and
 * over Redis the CONNECT takes a round trip or two, in which a client that subscribes on CONNACK
 * had its whole burst parsed, held and then handled at once, past any gate: in a 2,000 x 100
 * storm over Redis, 163,000 of the 200,000 SUBSCRIBEs never met the pacer. So the gate is there
 * from the first SUBSCRIBE parsed, and admits none until the CONNECT is handled. The first
 * authorization still installs a gate on connections not watched (restored sessions).
 */
export class SubscribePacer {
  private admitted = 0;
  private turnScheduled = false;
  private waiting: ReadGate[] = [];
  private readonly gated = new WeakSet<Client>();
  private readonly watched = new WeakMap<object, WatchedParser>();
  /** One function for every watched parser (no closure per idle connection). */
  private readonly watchParser: () => boolean;

  constructor(private readonly perTurn = SUBSCRIBES_PER_TURN) {
    const pacer = this;
    this.watchParser = function watchForSubscribe(this: ParserShape): boolean {
      return pacer.onParsed(this);
    };
  }

  /**
   * Call when aedes takes a connection, before it reads: the client's first SUBSCRIBE, wherever
   * it is parsed, installs its gate and is the first packet the gate is asked about. Call it
   * after every other layer that wraps the parser (they stay in the chain).
   */
  watch(client: Client): void {
    const parser = parserOf(client);
    if (!parser) {
      throw new TypeError(
        "aedes client parser has an unexpected shape: the subscribe pacer cannot watch it",
      );
    }
    this.watched.set(parser, { client, previous: parser._newPacket });
    parser._newPacket = this.watchParser;
  }

  /** Wraps the broker's authorizeSubscribe hook: a client's first SUBSCRIBE installs its gate. */
  observeSubscribe<Result>(
    authorizeSubscribe: (client: Client, subscription: Subscription) => Result,
  ): (client: Client, subscription: Subscription) => Result {
    return (client, subscription) => {
      if (!this.gated.has(client)) this.gate(client);
      return authorizeSubscribe(client, subscription);
    };
  }

  private onParsed(parser: ParserShape): boolean {
    const entry = this.watched.get(parser);
    if (entry === undefined) return false; // unreachable: only watched parsers call this
    if (parser.packet?.cmd !== "subscribe") return entry.previous.call(parser);
    this.watched.delete(parser);
    parser._newPacket = entry.previous;
    if (!this.gated.has(entry.client)) this.gate(entry.client);
    // The gate, now in place, asks about this SUBSCRIBE.
    return parser._newPacket();
  }

  private gate(client: Client): void {
    this.gated.add(client);
    const gate: ReadGate = installReadGate(
      client,
      { admit: () => this.admit(gate, client) },
      "subscribe",
    );
  }

  private admit(gate: ReadGate, client: Client): boolean {
    // Until its CONNECT is handled, aedes would hold the client's SUBSCRIBEs (or, before the
    // CONNACK, queue at most 42 and close the connection past that) and handle them all at
    // once when it is: they wait in the parser instead, and come through the pacer after.
    if (!(client as unknown as { connected?: boolean }).connected) {
      (client as unknown as NodeJS.EventEmitter).once("connected", () => gate.resume());
      return false;
    }
    if (!this.turnScheduled) {
      this.turnScheduled = true;
      setImmediate(() => this.nextTurn());
    }
    if (this.admitted < this.perTurn) {
      this.admitted++;
      return true;
    }
    this.waiting.push(gate);
    return false;
  }

  private nextTurn(): void {
    this.turnScheduled = false;
    this.admitted = 0;
    const waiting = this.waiting;
    this.waiting = [];
    // Each resumed parser takes SUBSCRIBEs until the budget is spent again; the rest wait again.
    for (const gate of waiting) gate.resume();
  }
}
