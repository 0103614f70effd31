import type { Logger } from "../observability/logger.js";
import type { SluiceMetrics } from "../observability/metrics.js";

/** One warning per client id at most this often; drops in between are summed into the next. */
const WARN_INTERVAL_MS = 10_000;
/** Client ids remembered for the rate limit; past it the memory starts over (a flood of ids). */
const MAX_REMEMBERED = 10_000;

/**
 * Reports QoS 1/2 messages dropped because a client's queue was full
 * (`limits.queue.maxQueuedPerClient`): every drop counted in
 * `sluice_dropped_messages_total{reason="queue_full"}`, and a warning naming the client id, at
 * most one per client every 10 s (a subscriber that stays away drops on every message).
 */
export class QueueDropReporter {
  private readonly warned = new Map<string, { at: number; unreported: number }>();

  constructor(
    private readonly metrics: SluiceMetrics,
    private readonly log: Logger,
    private readonly maxQueued: number,
  ) {}

  dropped(clientId: string, count: number): void {
    this.metrics.markMessageDropped("queue_full", count);
    const now = Date.now();
    const last = this.warned.get(clientId);
    if (last && now - last.at < WARN_INTERVAL_MS) {
      last.unreported += count;
      return;
    }
    if (!last && this.warned.size >= MAX_REMEMBERED) this.warned.clear();
    const dropped = count + (last?.unreported ?? 0);
    this.warned.set(clientId, { at: now, unreported: 0 });
    this.log.warn(
      { event: "queue.full", clientId, dropped, maxQueuedPerClient: this.maxQueued },
      `queue of ${clientId} full: dropped its ${dropped} oldest QoS 1/2 message(s)`,
    );
  }
}
