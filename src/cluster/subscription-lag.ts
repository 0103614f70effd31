import type { Redis } from "ioredis";
import { asError } from "../errors.js";
import type { Logger } from "../observability/logger.js";

/** How often Redis is asked; at 50 MB/s of pub/sub traffic that is 5 MB between two looks. */
const POLL_MS = 100;

/**
 * How far this node is behind in reading its Redis subscription: Redis' output buffer for the
 * node's subscriber connection (`omem` of CLIENT LIST), which Redis caps with
 * `client-output-buffer-limit pubsub` by closing the connection. Asked on another connection
 * (a subscribed one may send no other command), found by the subscriber's connection name.
 * Where CLIENT LIST is refused (some managed Redis), the lag reads 0 and only the outbound
 * pipeline bounds backpressure; that is logged once.
 */
export class SubscriptionLag {
  bytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly changed: Array<() => void> = [];
  private readonly pattern: RegExp;

  constructor(
    private readonly query: Redis,
    subscriberName: string,
    private readonly log: Logger,
  ) {
    const name = subscriberName.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
    this.pattern = new RegExp(` name=${name} .*? omem=(\\d+)`);
  }

  start(): void {
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  onChange(listener: () => void): void {
    this.changed.push(listener);
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.poll(), POLL_MS);
    this.timer.unref();
  }

  private async poll(): Promise<void> {
    if (this.query.status !== "ready") return this.schedule();
    let list: string;
    try {
      list = String(await this.query.call("CLIENT", "LIST", "TYPE", "pubsub"));
    } catch (error) {
      const err = asError(error);
      if (/NOPERM|unknown (sub)?command|ERR unknown/i.test(err.message)) {
        this.log.info(
          { event: "redis.subscription_lag_unmeasured", err },
          "CLIENT LIST refused: the subscription's lag is not measured, backpressure follows the outbound pipeline only",
        );
        return;
      }
      return this.schedule();
    }
    const bytes = Number(this.pattern.exec(list)?.[1] ?? 0);
    if (bytes !== this.bytes) {
      this.bytes = bytes;
      for (const listener of this.changed) listener();
    }
    this.schedule();
  }
}
