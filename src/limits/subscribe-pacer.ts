import type { Client, Subscription } from "aedes";
import { installReadGate, type ReadGate } from "../engine/read-gate.js";

/**
 * SUBSCRIBE packets the node takes on per turn of the event loop, all clients together. In a
 * 2,000 x 100 storm (bench subscribe-storm, in memory) 64 gave a bystander p99 of 85 ms at
 * 40k subscriptions/s, 256 166 ms at 30k/s, no limit 760 ms at 24k/s: smaller turns also
 * leave less garbage to promote.
 */
const SUBSCRIBES_PER_TURN = 64;

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
 * A client gets its gate at its first SUBSCRIBE: connections that never subscribe carry none.
 */
export class SubscribePacer {
  private admitted = 0;
  private turnScheduled = false;
  private waiting: ReadGate[] = [];
  private readonly gated = new WeakSet<Client>();

  constructor(private readonly perTurn = SUBSCRIBES_PER_TURN) {}

  /** Wraps the broker's authorizeSubscribe hook: a client's first SUBSCRIBE installs its gate. */
  observeSubscribe<Result>(
    authorizeSubscribe: (client: Client, subscription: Subscription) => Result,
  ): (client: Client, subscription: Subscription) => Result {
    return (client, subscription) => {
      if (!this.gated.has(client)) this.gate(client);
      return authorizeSubscribe(client, subscription);
    };
  }

  private gate(client: Client): void {
    this.gated.add(client);
    const gate: ReadGate = installReadGate(client, { admit: () => this.admit(gate) }, "subscribe");
  }

  private admit(gate: ReadGate): boolean {
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
