import type { LoadClient, LoadPublishOptions } from "./load-client.js";
import type { QoS } from "./messages.js";
import { PayloadWriter } from "./payload.js";
import type { ProtocolLevel } from "./protocol-level.js";

/** The user property of a tagged MQTT 5 PUBLISH: 23 bytes on the wire (identifier, two strings). */
const USER_PROPERTY = { site: "plant-7/line-3" };

/**
 * One publisher's send loop: as fast as its windows allow, or at a target rate (still capped by
 * them, so a slow broker makes the publisher fall behind rather than queue without bound).
 * Two windows: the in-flight window counts a QoS 0 message until MQTT.js has handed it to the
 * socket (its callback waits for 'drain' when the socket buffer is full) and a QoS 1/2 message
 * until acknowledged; the end-to-end window counts messages its slowest subscriber has not yet
 * received, as reported by the coordinator. A publisher never sends more than `maxMessages`.
 * At MQTT 5 every other message carries one user property, as a gateway tagging its source
 * would: the broker parses, stores and forwards properties on half the messages.
 */
export class PublisherLoop {
  private publishedCount = 0;
  private acknowledgedCount = 0;
  private inflight = 0;
  private stopped = true;
  private scheduled = false;
  private timer: NodeJS.Timeout | undefined;
  private startedAtNs = 0n;
  /** See DeliveredThrough: how far the slowest subscription has received. */
  private deliveredThrough = 0;
  private idleWaiters: Array<() => void> = [];
  private readonly writer: PayloadWriter;
  /** MQTT 5: the options of the odd-numbered messages, which carry a user property. */
  private readonly tagged: LoadPublishOptions | undefined;

  constructor(
    private readonly client: LoadClient,
    readonly index: number,
    private readonly topic: string,
    private readonly qos: QoS,
    payloadBytes: number,
    private readonly window: number,
    private readonly endToEndWindow: number,
    private readonly ratePerSecond: number | undefined,
    private readonly maxMessages = Number.POSITIVE_INFINITY,
    protocolVersion: ProtocolLevel = 4,
  ) {
    this.writer = new PayloadWriter(index, payloadBytes);
    this.tagged =
      protocolVersion === 5 ? { qos, properties: { userProperties: USER_PROPERTY } } : undefined;
  }

  get published(): number {
    return this.publishedCount;
  }

  get acknowledged(): number {
    return this.acknowledgedCount;
  }

  /** Subscribers have caught up to `through`: the end-to-end window may open again. */
  setDeliveredThrough(through: number): void {
    if (through <= this.deliveredThrough) return;
    this.deliveredThrough = through;
    if (!this.stopped && this.ratePerSecond === undefined && !this.scheduled) {
      this.scheduled = true;
      setImmediate(this.pump);
    }
  }

  start(): void {
    this.stopped = false;
    this.startedAtNs = process.hrtime.bigint();
    this.pump();
  }

  /** Stops publishing; resolves when every message out is acknowledged, or after `drainMs`. */
  async stop(drainMs: number): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.inflight === 0) return;
    await new Promise<void>((resolve) => {
      const timeout = setTimeout(resolve, drainMs);
      this.idleWaiters.push(() => {
        clearTimeout(timeout);
        resolve();
      });
    });
  }

  private readonly pump = (): void => {
    this.scheduled = false;
    this.timer = undefined;
    if (this.stopped) return;
    let budget = Math.min(
      this.window - this.inflight,
      this.endToEndWindow - (this.publishedCount - this.deliveredThrough),
      this.maxMessages - this.publishedCount,
    );
    if (this.ratePerSecond !== undefined) {
      const elapsedSeconds = Number(process.hrtime.bigint() - this.startedAtNs) / 1e9;
      const due = Math.floor(elapsedSeconds * this.ratePerSecond) - this.publishedCount;
      budget = Math.min(budget, due);
    }
    // At QoS 0 the callback usually runs synchronously, so the window alone would never stop
    // this loop: one window's worth per turn of the event loop, then yield.
    for (let i = 0; i < budget && !this.stopped; i++) this.sendOne();
    if (this.ratePerSecond !== undefined) this.scheduleNextDue();
  };

  private sendOne(): void {
    const sequence = this.publishedCount++;
    this.inflight++;
    const payload = this.writer.stamp(sequence, process.hrtime.bigint());
    const options =
      this.tagged !== undefined && sequence % 2 === 1 ? this.tagged : { qos: this.qos };
    this.client.publish(this.topic, payload, options, this.onSent);
  }

  private readonly onSent = (error?: Error): void => {
    this.inflight--;
    if (!error) this.acknowledgedCount++;
    if (this.stopped) {
      if (this.inflight === 0) for (const waiter of this.idleWaiters.splice(0)) waiter();
      return;
    }
    // Full speed: refill the window on the next turn. At a rate the timer drives the loop.
    if (this.ratePerSecond === undefined && !this.scheduled) {
      this.scheduled = true;
      setImmediate(this.pump);
    }
  };

  private scheduleNextDue(): void {
    if (this.stopped || this.timer || this.ratePerSecond === undefined) return;
    if (this.publishedCount >= this.maxMessages) return;
    const elapsedMs = Number(process.hrtime.bigint() - this.startedAtNs) / 1e6;
    const nextDueMs = ((this.publishedCount + 1) / this.ratePerSecond) * 1000;
    this.timer = setTimeout(this.pump, Math.max(1, nextDueMs - elapsedMs));
  }
}
