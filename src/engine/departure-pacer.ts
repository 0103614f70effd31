import type { Client, Subscription } from "aedes";
import {
  announceUnsubscribes,
  brokerOf,
  type DeliverFunction,
  type LiveSubscription,
  takeSubscriptions,
} from "./aedes-internals.js";
import { Fifo } from "./fifo.js";

/**
 * Removals of departed clients' subscriptions under way at once, all clients together: started
 * in one turn of the event loop, the next ones once they are done (in memory the turn after;
 * over Redis once Redis has answered their UNSUBSCRIBE, whose replies would otherwise pile up
 * into one long read). A removal costs 8 µs in memory and 19 µs over Redis (its share of the
 * UNSUBSCRIBE and of its reply), garbage collection included: 1,000 keep a turn near 20 ms.
 */
const REMOVALS_AT_ONCE = 1_000;

interface ParserShape {
  client?: unknown;
  removeAllListeners(event?: string | symbol): unknown;
}

/** The parts of an aedes client the pacer works on. */
interface DepartingClient {
  closed: boolean;
  clean: boolean;
  deliver0: DeliverFunction;
  deliverQoS: DeliverFunction;
  _parser?: Partial<ParserShape>;
}

/** A departed client's listeners, removed in order from `next` on. */
interface Departure {
  client: Client & DepartingClient;
  filters: string[];
  listeners: Record<string, LiveSubscription>;
  next: number;
}

/**
 * Spreads the removal of departed clients' subscriptions over turns of the event loop, so that
 * a plant's clients leaving at once (a network cut, a shift change, a subscribe storm's end) do
 * not stall the node: aedes removed every subscription of every client a read closed in that
 * read, 200,000 listeners in one go when 2,000 clients of 100 filters left (event-loop stalls of
 * 0.4-0.6 s in memory and 1.0-1.2 s over Redis in the subscribe-storm bench, a bystander's
 * messages waiting behind them).
 *
 * When aedes starts closing a client, its live subscriptions are taken from it (aedes then
 * finishes the close at once: will, unregistration, socket) and removed from the emitter in the
 * order the clients left, at most REMOVALS_AT_ONCE under way node-wide, started a turn at a
 * time. Until then a departed client's
 * listeners still match messages, and must deliver nothing: a subscribing client's deliveries
 * go through a guard that drops them once the client is closed, before aedes writes, counts,
 * or stores an in-flight message id. A persistent session's message was put in its stored queue
 * before delivery (aedes enqueues first), where it waits for the session's return, as it would
 * had the listener been gone; its stored subscriptions are not touched (the close path removes
 * live listeners only). A client id that comes back at once has listeners of its own: a removal
 * takes the old listener only (the emitter removes by listener, and over Redis counts a
 * channel's listeners before it UNSUBSCRIBEs).
 *
 * Hooked when a client first asks for a subscription (restored ones included), before aedes
 * reads its deliver functions: connections that never subscribe carry nothing.
 */
export class DeparturePacer {
  private readonly queue = new Fifo<Departure>();
  /** Removals not yet started, and started but not yet done (over Redis: not yet answered). */
  private queued = 0;
  private inFlight = 0;
  private turnScheduled = false;
  private readonly watched = new WeakSet<Client>();
  private readonly removed = (): void => {
    this.inFlight--;
    if (this.queue.length > 0) this.schedule();
  };
  /** The parser's removeAllListeners of every watched client (one function, no closure each). */
  private readonly departOnClose: (this: ParserShape, event?: string | symbol) => unknown;

  constructor(private readonly atOnce = REMOVALS_AT_ONCE) {
    const pacer = this;
    // aedes' close() sets `closed` and, as its first step, removes its parser's 'packet'
    // listeners; it unsubscribes the client's listeners a few steps later.
    this.departOnClose = function removeAllListenersThenDepart(this: ParserShape, event) {
      const result = (Object.getPrototypeOf(this) as ParserShape).removeAllListeners.call(
        this,
        event,
      );
      const client = this.client as (Client & DepartingClient) | undefined;
      if (event === "packet" && client?.closed === true) pacer.depart(client);
      return result;
    };
  }

  /** Subscriptions of departed clients not yet removed (over Redis: not yet answered). */
  get pending(): number {
    return this.queued + this.inFlight;
  }

  /** Wraps the broker's authorizeSubscribe hook: a client's first subscription watches it. */
  observeSubscribe<Result>(
    authorizeSubscribe: (client: Client, subscription: Subscription) => Result,
  ): (client: Client, subscription: Subscription) => Result {
    return (client, subscription) => {
      if (!this.watched.has(client)) this.watch(client);
      return authorizeSubscribe(client, subscription);
    };
  }

  private watch(aedesClient: Client): void {
    const client = aedesClient as Client & DepartingClient;
    const parser = client._parser;
    if (
      typeof client.deliver0 !== "function" ||
      typeof client.deliverQoS !== "function" ||
      typeof parser?.removeAllListeners !== "function" ||
      parser.client !== client
    ) {
      throw new TypeError(
        "aedes client has an unexpected shape: its subscriptions cannot be removed paced",
      );
    }
    this.watched.add(aedesClient);
    client.deliver0 = closedDropsDeliveries(client, client.deliver0);
    client.deliverQoS = closedDropsDeliveries(client, client.deliverQoS);
    parser.removeAllListeners = this.departOnClose;
  }

  private depart(client: Client & DepartingClient): void {
    const listeners = takeSubscriptions(client);
    const filters = Object.keys(listeners);
    if (filters.length === 0) return;
    this.queue.push({ client, filters, listeners, next: 0 });
    this.queued += filters.length;
    this.schedule();
  }

  private schedule(): void {
    if (this.turnScheduled) return;
    this.turnScheduled = true;
    setImmediate(() => this.nextTurn());
  }

  private nextTurn(): void {
    this.turnScheduled = false;
    let budget = this.atOnce - this.inFlight;
    for (let departure = this.queue.peek(); departure && budget > 0; ) {
      budget -= this.remove(departure, budget);
      if (departure.next < departure.filters.length) break;
      this.queue.take();
      departure = this.queue.peek();
    }
    // With the whole budget in flight, the next turn waits for removals to finish (removed()).
    if (this.queue.length > 0 && this.inFlight < this.atOnce) this.schedule();
  }

  /** Removes up to `budget` more of a departed client's listeners; returns how many. */
  private remove(departure: Departure, budget: number): number {
    const { client, filters, listeners } = departure;
    const broker = brokerOf(client);
    const from = departure.next;
    if (broker.closed) {
      // The emitter closed with the broker: nothing is left to remove.
      this.queued -= filters.length - from;
      departure.next = filters.length;
      return 0;
    }
    const end = Math.min(filters.length, from + budget);
    this.queued -= end - from;
    this.inFlight += end - from;
    for (let i = from; i < end; i++) {
      const filter = filters[i] as string;
      broker.unsubscribe(filter, (listeners[filter] as LiveSubscription).func, this.removed);
    }
    departure.next = end;
    // Once the removals are under way, as aedes' own close path announces them after its own.
    if (end === filters.length && client.clean) announceUnsubscribes(client, filters);
    return end - from;
  }
}

/**
 * A client's deliver function that drops what reaches it once the client is closed (answered
 * on a later turn, as aedes answers a delivery it refuses, so the emitter does not recurse).
 */
function closedDropsDeliveries(client: { closed: boolean }, deliver: DeliverFunction) {
  return (packet: Parameters<DeliverFunction>[0], done: () => void): void => {
    if (client.closed) setImmediate(done);
    else deliver(packet, done);
  };
}
