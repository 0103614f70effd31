import type { AedesPublishPacket, Client } from "aedes";

/** How an envelope id of an inbound QoS 2 message's first attempt starts: `!<origin>`. */
export const FIRST_ATTEMPT = "!";
/** How an envelope id of a later attempt starts: `?<origin>/<token>`. */
export const LATER_ATTEMPT = "?";
const FIRST_CODE = FIRST_ATTEMPT.charCodeAt(0);
const LATER_CODE = LATER_ATTEMPT.charCodeAt(0);

/** The origin a received message was published under, and whether it may be a second copy. */
interface Attempt {
  origin: string;
  again: boolean;
}

/** A connection got the message from its resumed session's queue. */
const FROM_QUEUE = "queue";

/**
 * Per connection: whether this node surely handed it the message (false: not yet known), or it
 * came from the connection's resumed queue. Weak: a connection gone is not kept alive by the
 * origins remembered.
 */
type Sent = WeakMap<object, boolean | typeof FROM_QUEUE>;

/**
 * Which of this node's connections each inbound QoS 2 message went to, so that a later attempt
 * of it (a resend that took its reservation over, published under the same origin: see
 * inbound-qos2.ts) skips them and reaches everyone else (issue 17). Each node judges only its
 * own deliveries: a node or a connection that missed the first copy gets the later one.
 *
 * A connection counts once the message is surely on its way to it: at once for a clean
 * session, and for a persistent session's QoS 1/2 delivery once its record is stored (aedes
 * writes the message only then; a failed store closes the connection unwritten). Until then a
 * later attempt is delivered to it too: a second copy rather than a loss. A connection, not a
 * client id: a client that reconnected gets a later attempt again (its resumed session has
 * the first copy only if the queue does, and that one is confirmed on the replicas before the
 * first PUBLISH). Origins are kept by count and time (two generations, `size` origins or
 * `windowMs` each).
 */
export class AttemptDeliveries {
  private readonly attempts = new WeakMap<Buffer, Attempt>();
  /** Deliveries skipped here (aedes then clears a persistent session's queued copy: kept). */
  private readonly skippedPackets = new WeakSet<object>();
  private current = new Map<string, Sent>();
  private previous = new Map<string, Sent>();
  private startedAt = Date.now();

  constructor(
    private readonly size = 10_000,
    private readonly windowMs = 120_000,
  ) {}

  /** A message received from Redis: marked by its payload if its id names an attempt. */
  received(id: string, msg: object): void {
    const code = id.charCodeAt(0);
    if (code !== FIRST_CODE && code !== LATER_CODE) return;
    const payload = (msg as { payload?: unknown }).payload;
    if (!Buffer.isBuffer(payload)) return;
    const again = code === LATER_CODE;
    const end = again ? id.indexOf("/") : id.length;
    if (end < 2) return;
    this.attempts.set(payload, { origin: id.slice(1, end), again });
  }

  /** Wraps the broker's authorizeForward: a later attempt skips the connections that had it. */
  filterForward(
    authorizeForward: (client: Client, packet: AedesPublishPacket) => AedesPublishPacket | null,
  ): (client: Client, packet: AedesPublishPacket) => AedesPublishPacket | null {
    return (client, packet) => {
      const forwarded = authorizeForward(client, packet);
      if (forwarded === null || packet.qos !== 2) return forwarded;
      if (this.forward(client, packet.payload)) return forwarded;
      this.skippedPackets.add(packet);
      return null;
    };
  }

  /** Whether `client` is to get the message with this payload; noted if so. */
  forward(client: { clean?: boolean }, payload: unknown): boolean {
    if (!Buffer.isBuffer(payload)) return true;
    const attempt = this.attempts.get(payload);
    if (attempt === undefined) return true;
    let sent = this.current.get(attempt.origin) ?? this.previous.get(attempt.origin);
    if (sent === undefined) {
      sent = new WeakMap();
      this.add(attempt.origin, sent);
    } else {
      const sure = sent.get(client);
      // A queue resent at CONNECT may hold a reserved message before its first attempt is
      // published (its copies are queued, then confirmed on the replicas, then published).
      if (sure === FROM_QUEUE) return false;
      if (sure === true) return !attempt.again;
    }
    sent.set(client, client.clean !== false);
    return true;
  }

  /**
   * Whether this delivery was skipped as a later attempt. Its session's queued copy, if any, is
   * kept: one is queued only when the first attempt's was lost with a primary (enqueue-2.lua's
   * marker), and a connection that had the first copy may still close before it completed it.
   */
  skipped(packet: object): boolean {
    return this.skippedPackets.has(packet);
  }

  /** A persistent session's delivery record is stored: the message is on its way to it. */
  written(client: object, payload: unknown): void {
    if (!Buffer.isBuffer(payload)) return;
    const attempt = this.attempts.get(payload);
    if (attempt === undefined) return;
    const sent = this.current.get(attempt.origin) ?? this.previous.get(attempt.origin);
    if (sent?.get(client) === false) sent.set(client, true);
  }

  /** A resumed session's queue holds the message: its connection has it from there. */
  resumed(client: object, origin: string): void {
    let sent = this.current.get(origin) ?? this.previous.get(origin);
    if (sent === undefined) {
      sent = new WeakMap();
      this.add(origin, sent);
    }
    sent.set(client, FROM_QUEUE);
  }

  private add(origin: string, sent: Sent): void {
    const now = Date.now();
    if (this.current.size >= this.size || now - this.startedAt >= this.windowMs) {
      this.previous = this.current;
      this.current = new Map();
      this.startedAt = now;
    }
    this.current.set(origin, sent);
  }
}
