import { performance } from "node:perf_hooks";
import v8 from "node:v8";
import vm from "node:vm";
import { asError } from "../errors.js";
import type { Logger } from "../observability/logger.js";

/** Departures since the last collection that make one worth its pause. */
const MIN_DEPARTED = 1_000;
/** How long departures must have stopped: the wave is over, the node is quiet again. */
const SETTLE_MS = 2_000;
/** Garbage worth a collection: used heap this far above what the last collection left. */
const MIN_HEAP_GROWTH_BYTES = 64 * 1024 * 1024;
/** At most one collection this often, however much churn. */
const MIN_INTERVAL_MS = 60_000;

type FullCollection = () => void;

/** The clients' departures, as aedes reports them. */
export interface DepartureSource {
  on(event: "clientDisconnect", listener: () => void): unknown;
}

/**
 * One full garbage collection after a mass departure: thousands of clients leaving at once (a
 * subscribe storm's clients, a gateway fleet moving to another node) leave their sessions and
 * subscriptions as garbage in V8's old generation, which an idle node never collects (no
 * allocation, no major GC): 2,000 clients x 100 subscriptions left ~500 MiB of used heap for
 * as long as the node stayed quiet. Once departures have stopped for 2 s, and at least 1,000
 * clients left with the used heap 64 MiB past what the last collection left, one full
 * collection runs (a pause of tens of milliseconds on a quiet node, logged), at most once a
 * minute.
 *
 * The collection is V8's own `gc()`, exposed at start (`--expose-gc` set at runtime and read
 * from a fresh context): no flag for operators to remember. Where V8 refuses, nothing is
 * collected and that is logged once.
 */
export function reclaimMemoryAfterDepartures(
  broker: DepartureSource,
  log: Logger,
  collect: FullCollection | undefined = exposeFullCollection(log),
): void {
  if (collect === undefined) return;
  let departed = 0;
  let heapAfterLast = process.memoryUsage().heapUsed;
  let lastAt = Number.NEGATIVE_INFINITY;
  let timer: NodeJS.Timeout | undefined;
  const settle = (): void => {
    timer = undefined;
    const heapBefore = process.memoryUsage().heapUsed;
    const started = performance.now();
    if (departed < MIN_DEPARTED || heapBefore - heapAfterLast < MIN_HEAP_GROWTH_BYTES) return;
    if (started - lastAt < MIN_INTERVAL_MS) return;
    lastAt = started;
    collect();
    heapAfterLast = process.memoryUsage().heapUsed;
    log.info(
      {
        event: "memory.reclaimed",
        departed,
        heapBeforeMiB: Math.round(heapBefore / 1_048_576),
        heapAfterMiB: Math.round(heapAfterLast / 1_048_576),
        ms: Math.round(performance.now() - started),
      },
      "full garbage collection after a mass departure",
    );
    departed = 0;
  };
  broker.on("clientDisconnect", () => {
    departed++;
    if (departed < MIN_DEPARTED) return;
    clearTimeout(timer);
    timer = setTimeout(settle, SETTLE_MS);
    timer.unref();
  });
}

function exposeFullCollection(log: Logger): FullCollection | undefined {
  const existing = (globalThis as { gc?: unknown }).gc;
  if (typeof existing === "function") return existing as FullCollection;
  try {
    v8.setFlagsFromString("--expose-gc");
    const gc: unknown = vm.runInNewContext("gc");
    if (typeof gc === "function") return gc as FullCollection;
  } catch (error) {
    log.info(
      { event: "memory.reclaim_unavailable", err: asError(error) },
      "V8's gc() could not be exposed: no collection after mass departures",
    );
  }
  return undefined;
}
