import { getHeapStatistics } from "node:v8";
import type { Logger } from "../observability/logger.js";

export interface OverloadSettings {
  /** The longest event-loop delay within one 1 s sampling window that counts as overload. */
  eventLoopDelayMs: number;
  /** Heap used over the heap's limit that counts as overload. */
  heapUsedRatio: number;
  /** How long both must stay under their thresholds before new clients are taken again. */
  recoverMs: number;
}

const SAMPLE_MS = 1_000;
/** The lag probe's period: a stall shows as a tick this much late, or more. */
const PROBE_MS = 50;

/**
 * Watches the two signs that a Node.js broker is past what it can serve: an event loop that
 * lags (every client's packets wait behind it) and a heap near its limit (an OOM kill would drop
 * every client at once). While either holds, the node is overloaded: it refuses new clients and
 * turns not-ready, so the load balancer sends them elsewhere; established sessions keep working.
 * It recovers by itself once both have stayed under their thresholds for `recoverMs`.
 */
export class OverloadMonitor {
  private readonly probe: NodeJS.Timeout;
  private readonly timer: NodeJS.Timeout;
  private lastTick = performance.now();
  /** The longest stall seen since the last sample, in ms. */
  private worstLagMs = 0;
  private overloadedSince: number | undefined;
  private calmSince: number | undefined;

  constructor(
    private readonly settings: OverloadSettings,
    private readonly log: Logger,
    private readonly heapLimit = getHeapStatistics().heap_size_limit,
  ) {
    // A timer's lateness is the event loop's delay. (perf_hooks' monitorEventLoopDelay missed
    // a 400 ms stall in the test suite here, after other nodes had come and gone.)
    this.probe = setInterval(() => {
      const now = performance.now();
      this.worstLagMs = Math.max(this.worstLagMs, now - this.lastTick - PROBE_MS);
      this.lastTick = now;
    }, PROBE_MS);
    this.probe.unref();
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
    this.timer.unref();
  }

  get overloaded(): boolean {
    return this.overloadedSince !== undefined;
  }

  close(): void {
    clearInterval(this.timer);
    clearInterval(this.probe);
  }

  private sample(): void {
    // The longest stall in the window: one long stall held every client up for that long.
    const delayMs = this.worstLagMs;
    this.worstLagMs = 0;
    const heapRatio = process.memoryUsage().heapUsed / this.heapLimit;
    const over =
      delayMs > this.settings.eventLoopDelayMs || heapRatio > this.settings.heapUsedRatio;
    const now = Date.now();
    if (over) {
      this.calmSince = undefined;
      if (this.overloadedSince === undefined) {
        this.overloadedSince = now;
        this.log.warn(
          {
            event: "overload.started",
            eventLoopDelayMs: Math.round(delayMs),
            heapUsedRatio: Number(heapRatio.toFixed(3)),
          },
          "overloaded: refusing new clients until the node recovers",
        );
      }
      return;
    }
    if (this.overloadedSince === undefined) return;
    this.calmSince ??= now;
    if (now - this.calmSince < this.settings.recoverMs) return;
    this.log.info(
      { event: "overload.ended", lastedMs: now - this.overloadedSince },
      "recovered from overload: taking new clients again",
    );
    this.overloadedSince = undefined;
    this.calmSince = undefined;
  }
}
