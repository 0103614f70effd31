import type { AedesPublishPacket, Client, Subscription } from "aedes";
import { Fifo } from "./fifo.js";

export interface InflightWindowLimits {
  /**
   * QoS 1/2 deliveries written to a client and not yet acknowledged (PUBACK / PUBCOMP); an
   * MQTT 5 client's Receive Maximum, if lower, instead.
   */
  maxInflight: number;
  /** Deliveries waiting for the window, per client; the oldest are dropped past it. */
  maxQueued: number;
}

export interface InflightWindowEvents {
  /**
   * Waiting deliveries of a clean session were dropped: the only copy. A persistent session's
   * waiting deliveries are also in its stored queue, capped alike, whose drops are reported
   * by the store (counting them here as well would count them twice).
   */
  onDropped(client: Client, count: number): void;
}

type Deliver = (packet: AedesPublishPacket, done: () => void) => void;

interface DeliveringClient {
  deliverQoS: Deliver;
  clean: boolean;
  closed: boolean;
  subscriptions: Record<string, { qos?: number } | undefined>;
  _parser?: { on(event: "packet", listener: (packet: { cmd: string }) => void): void };
}

const NOT_CALLED = Symbol("authorizeForward not called");
/** The smallest window whose waiting deliveries are written a quarter of the window at a time. */
const BATCHED_WINDOW = 64;

/** A windowed client whose deliveries wait: what cluster backpressure counts. */
interface Backlog {
  readonly client: DeliveringClient;
  readonly waiting: Fifo<AedesPublishPacket>;
  /** When the client last acknowledged a delivery (Date.now()). */
  ackedAt: number;
}

/**
 * The QoS 1/2 in-flight window of each connected client (`limits.queue.maxInflight`): at most
 * N deliveries written and not acknowledged; further ones wait in memory (at most
 * `maxQueued`, the oldest dropped) and are written as acknowledgements free the window.
 *
 * A waiting delivery reports itself done at once. aedes completes a publish, and so sends the
 * publisher's PUBACK, only once every delivery is done; a delivery written to a frozen
 * subscriber is done only when its socket drains, so one frozen subscriber held up every
 * publisher of its topics until drainTimeoutMs. A persistent session's message is in its
 * stored queue before it is delivered (aedes enqueues first), so answering early loses
 * nothing if the node dies; a clean session's would be lost with its connection anyway.
 *
 * Hooked by wrapping a client's own `deliverQoS` (what its subscriptions, retained messages
 * and `client.publish` call) when it first asks for a QoS 1/2 subscription, restored ones
 * included: aedes authorizes every subscription before it reads `deliverQoS` into it, and a
 * client without one gets QoS 0 only. So an idle connection, or one that only gets QoS 0,
 * keeps no wrapper (a closure and its context, about 170 bytes). Not covered: the stored queue
 * a resumed session gets at CONNECT, which aedes writes directly, paced by the socket.
 */
export class InflightWindows {
  /**
   * What the broker's authorizeForward returned in the delivery being started: aedes calls it
   * synchronously inside deliverQoS, and a delivery it refuses is never written, so never
   * acknowledged, and must not hold a slot. NOT_CALLED: refused before it (no-local).
   */
  private lastForward: AedesPublishPacket | null | typeof NOT_CALLED = NOT_CALLED;
  /** Clients whose deliveries are behind a window (only those that asked for QoS 1/2). */
  private readonly windowed = new WeakSet<Client>();
  /** Clients with deliveries waiting for their window now. */
  private readonly backlogs = new Set<Backlog>();
  /** Deliveries waiting, every client's (recounted by waitingDeliveries: closed clients'). */
  private waitingTotal = 0;
  private backlogLimit = Number.POSITIVE_INFINITY;
  private onBacklog: () => void = noop;
  private drainedMark = -1;
  private onDrained: () => void = noop;

  constructor(
    private readonly limits: InflightWindowLimits,
    private readonly events: InflightWindowEvents,
  ) {}

  /** Wraps the broker's authorizeForward hook so that the windows see its decisions. */
  observeForward(
    authorizeForward: (client: Client, packet: AedesPublishPacket) => AedesPublishPacket | null,
  ): (client: Client, packet: AedesPublishPacket) => AedesPublishPacket | null {
    return (client, packet) => {
      const result = authorizeForward(client, packet);
      this.lastForward = result;
      return result;
    };
  }

  /**
   * Deliveries waiting for the windows of clients that acknowledged one within `activeMs`: the
   * node's own backlog. A client that has stopped acknowledging (frozen, gone quiet) waits
   * whatever the node does, so it is not counted: it must not hold the cluster back.
   */
  waitingDeliveries(activeMs: number, now = Date.now()): number {
    let active = 0;
    let all = 0;
    for (const backlog of this.backlogs) {
      if (backlog.client.closed || backlog.waiting.length === 0) {
        this.backlogs.delete(backlog);
        continue;
      }
      all += backlog.waiting.length;
      if (now - backlog.ackedAt <= activeMs) active += backlog.waiting.length;
    }
    this.waitingTotal = all;
    return active;
  }

  /** Deliveries waiting now, every client's. */
  get waiting(): number {
    return this.waitingTotal;
  }

  /**
   * Calls `listener` at each delivery made to wait while at least `limit` wait (every
   * client's), so that a burst is seen at once rather than at the next look.
   */
  watchBacklog(limit: number, listener: () => void): void {
    this.backlogLimit = limit;
    this.onBacklog = listener;
  }

  /**
   * Calls `listener` whenever acknowledgements bring the deliveries waiting (every client's)
   * down to `mark` or under, so that whoever held back for the backlog goes on at once rather
   * than at its next look.
   */
  watchDrained(mark: number, listener: () => void): void {
    this.drainedMark = mark;
    this.onDrained = listener;
  }

  /**
   * Wraps the broker's authorizeSubscribe hook: a client's first QoS 1/2 subscription puts its
   * deliveries behind a window, before aedes reads `deliverQoS` into the subscription.
   */
  observeSubscribe<Result>(
    authorizeSubscribe: (client: Client, subscription: Subscription) => Result,
  ): (client: Client, subscription: Subscription) => Result {
    return (client, subscription) => {
      if (subscription.qos > 0 && !this.windowed.has(client)) this.attach(client);
      return authorizeSubscribe(client, subscription);
    };
  }

  /** Puts a client's QoS 1/2 deliveries behind a window. */
  private attach(aedesClient: Client): void {
    this.windowed.add(aedesClient);
    const client = aedesClient as unknown as DeliveringClient;
    const deliver = client.deliverQoS;
    const parser = client._parser;
    if (typeof deliver !== "function" || typeof parser?.on !== "function") {
      throw new TypeError("aedes client has an unexpected shape: no in-flight window possible");
    }
    const { maxQueued } = this.limits;
    // [MQTT-3.3.4-9] an MQTT 5 client's Receive Maximum bounds it too (aedes sets 65,535 for
    // others and for a v5 CONNECT without one); read at CONNECT, before any subscription
    const maxInflight = Math.min(this.limits.maxInflight, aedesClient.receiveMaximum ?? Infinity);
    // Waiting deliveries are written once this many slots are free, together: refilled one
    // acknowledgement at a time, a subscriber behind its window was sent a packet or a few per
    // system call (0.23 calls per message on the subscribers' node of two at QoS 1). A window
    // under BATCHED_WINDOW is refilled at each acknowledgement: there the slots held back would
    // cost a subscriber that waits on its round trips more than the calls saved.
    const refill = maxInflight >= BATCHED_WINDOW ? Math.floor(maxInflight / 4) : 1;
    // Made when a delivery first has to wait: most idle connections never need one.
    let backlog: Backlog | undefined;
    let inflight = 0;
    let listening = false;

    client.deliverQoS = (packet, done) => {
      if (packet.qos === 0) {
        deliver(packet, done);
        return;
      }
      if (inflight < maxInflight && (backlog === undefined || backlog.waiting.length === 0)) {
        if (this.send(client, deliver, packet, done)) {
          inflight++;
          if (!listening) {
            listening = true;
            // Acknowledgements as they are read, before aedes clears them from the store: the
            // slot is the client's to use again once it has said it has the message. Listened
            // to from the first delivery that takes a slot (until then an ack frees nothing), so
            // an idle connection, or one that only gets QoS 0, keeps no listener (nor closure).
            parser.on("packet", (ack) => {
              if (ack.cmd !== "puback" && ack.cmd !== "pubcomp") return;
              // The stored queue a resumed session gets is written around the window: its
              // acks must not open the window wider.
              if (inflight > 0) inflight--;
              if (backlog === undefined) return;
              backlog.ackedAt = Date.now();
              const { waiting } = backlog;
              if (maxInflight - inflight < refill) return;
              while (inflight < maxInflight && waiting.length > 0 && !client.closed) {
                const next = waiting.take();
                this.waitingTotal--;
                if (next && this.send(client, deliver, next, noop)) inflight++;
              }
              if (this.waitingTotal <= this.drainedMark) this.onDrained();
            });
          }
        }
        return;
      }
      backlog ??= { client, waiting: new Fifo(), ackedAt: Date.now() };
      const { waiting } = backlog;
      // Out of the set once empty: back in when it next waits (a Set ignores a second add).
      if (waiting.length === 0) this.backlogs.add(backlog);
      waiting.push(packet);
      if (waiting.length > maxQueued) {
        waiting.take();
        if (client.clean) this.events.onDropped(aedesClient, 1);
      } else if (++this.waitingTotal >= this.backlogLimit) {
        this.onBacklog();
      }
      answerLater(done);
    };
  }

  /**
   * Starts one delivery; true if it holds a slot of the window (a method, not a closure per
   * client: each idle connection's closures count).
   */
  private send(
    client: DeliveringClient,
    deliver: Deliver,
    packet: AedesPublishPacket,
    done: () => void,
  ): boolean {
    this.lastForward = NOT_CALLED;
    deliver(packet, done);
    // aedes writes it at the QoS of the client's subscription to exactly this topic, if
    // lower: a QoS 0 write is never acknowledged
    const exact = client.subscriptions[packet.topic];
    const downgraded = exact !== undefined && (exact.qos ?? 0) === 0;
    const forwarded = this.lastForward as AedesPublishPacket | null | typeof NOT_CALLED;
    return forwarded !== NOT_CALLED && forwarded !== null && !downgraded;
  }
}

function noop(): void {}

/** Waiting deliveries' answers, given together on a later turn. */
let answers: Array<() => void> = [];

/**
 * Answers a waiting delivery on a later turn, as aedes' own deliveries do (mqemitter must not
 * recurse per message); one immediate for every answer of a turn, not one each: on a node whose
 * subscribers are behind their windows, that is nearly every message.
 */
function answerLater(done: () => void): void {
  if (answers.length === 0) setImmediate(answerAll);
  answers.push(done);
}

function answerAll(): void {
  const batch = answers;
  answers = [];
  for (const done of batch) done();
}
