import { randomBytes } from "node:crypto";
import { join } from "node:path";
import type { BrokerDefinition } from "../brokers/broker.js";
import { findBroker } from "../brokers/catalog.js";
import { startRedis } from "../brokers/redis.js";
import { baselineCli, startSluiceNode } from "../brokers/sluice.js";
import { Bystander, type BystanderLatency } from "../generator/bystander.js";
import { SubscriberSwarm } from "../generator/subscriber-swarm.js";
import { longestStallMs, loopStallProbe } from "../system/loop-stalls.js";
import { PeakRss, rssBytes } from "../system/process-memory.js";
import { cappedConnections } from "./connection-limits.js";
import type { Scenario, ScenarioContext, ScenarioOutput, TableCell } from "./scenario.js";

const DEFAULT_CLIENTS = 2_000;
const QUICK_CLIENTS = 100;
const DEFAULT_FILTERS = 100;
const QUICK_FILTERS = 20;
/** CONNECTs awaiting CONNACK per generator process. */
const WINDOW = 100;
const GENERATOR_PROCESSES = 2;
/** The storm's bound: whatever is not SUBACKed by then is reported missing. */
const STORM_TIMEOUT_MS = 60_000;
const QUICK_STORM_TIMEOUT_MS = 20_000;
/** How long the node may take to get back to its baseline after the clients leave. */
const RECOVERY_TIMEOUT_MS = 30_000;
const BYSTANDER_INTERVAL_MS = 20;
const SETTLE_MS = 1_000;
const SAMPLE_MS = 100;
/** The heap counts as back when within this much of its baseline. */
const HEAP_SLACK_BYTES = 16 * 2 ** 20;
/** Brokers without Sluice's gauge: how long after the DISCONNECTs their departure is watched. */
const OTHERS_DEPARTURE_MS = 5_000;
const MiB = 2 ** 20;
const BROKERS = ["mosquitto", "aedes", "aedes-redis", "sluice", "sluice-redis"];

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Target {
  url: string;
  pid: number | undefined;
  /** A Sluice node's HTTP port: its subscription gauge and heap, from /metrics. */
  httpPort?: number;
  /** Where a Sluice node's loop-stall probe writes (bench/src/system/loop-stall-probe.ts). */
  stallFile?: string;
  stop(): Promise<void>;
}

/** The Sluice figures this scenario reads from /metrics. */
interface NodeGauges {
  subscriptions: number;
  heapUsedBytes: number;
  /** Longest event-loop delay since the previous scrape (prom-client resets it per scrape). */
  loopDelayMaxMs: number;
}

/** A node still busy with the storm answers /metrics late: this long, before the read fails. */
const SCRAPE_TIMEOUT_MS = 30_000;

async function readGauges(httpPort: number): Promise<NodeGauges> {
  const response = await fetch(`http://127.0.0.1:${httpPort}/metrics`, {
    signal: AbortSignal.timeout(SCRAPE_TIMEOUT_MS),
  });
  const text = await response.text();
  const value = (name: string): number => {
    const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
    return Number(match?.[1] ?? Number.NaN);
  };
  return {
    subscriptions: value("sluice_subscriptions"),
    heapUsedBytes: value("nodejs_heap_size_used_bytes"),
    loopDelayMaxMs: value("nodejs_eventloop_lag_max_seconds") * 1000,
  };
}

/** The single Sluice nodes this scenario starts itself: whether over Redis, and which build. */
const SLUICE_TARGETS: Readonly<Record<string, { redis: boolean; cli?: () => string }>> = {
  sluice: { redis: false },
  "sluice-redis": { redis: true },
  "sluice-baseline": { redis: false, cli: baselineCli },
  "sluice-redis-baseline": { redis: true, cli: baselineCli },
};

/**
 * Sluice nodes are started here (not through their catalog entries) for their HTTP port; the
 * others as the catalog starts them.
 */
async function startTarget(
  context: ScenarioContext,
  definition: BrokerDefinition,
): Promise<Target> {
  const { cleanup, workDir } = context;
  const sluiceTarget = SLUICE_TARGETS[definition.name];
  if (sluiceTarget) {
    const redis = sluiceTarget.redis ? await startRedis(cleanup) : undefined;
    try {
      const run = randomBytes(3).toString("hex");
      const keyPrefix = `bench-substorm-${run}:`;
      const stallFile = join(workDir, `loop-stalls-${definition.name}-${run}.txt`);
      const node = await startSluiceNode({ cleanup, workDir }, `substorm-${definition.name}`, {
        ...(redis ? { redis: { url: redis.url, keyPrefix } } : {}),
        cli: sluiceTarget.cli?.(),
        instruments: loopStallProbe(stallFile),
      });
      return {
        url: node.url,
        pid: node.process?.pid,
        httpPort: node.httpPort,
        stallFile,
        async stop() {
          await node.stop();
          await redis?.stop();
        },
      };
    } catch (error) {
      await redis?.stop();
      throw error;
    }
  }
  const broker = await definition.start({ cleanup, workDir });
  const url = broker.publisherUrls[0];
  if (!url) {
    await broker.stop();
    throw new Error(`${definition.name} has no URL`);
  }
  return {
    url,
    pid: broker.processes.find((p) => p.role === "broker")?.pid,
    stop: () => broker.stop(),
  };
}

interface Recovery {
  gaugeBackMs: number | null;
  heapBackMs: number | null;
  last: NodeGauges;
  /** The departure: from the DISCONNECTs until the gauge was back (or the samples ended). */
  departure: { bystander: BystanderLatency; endedAt: number };
}

/**
 * After the clients left: samples until the gauge is back at its baseline and the heap within
 * HEAP_SLACK_BYTES of its own (or RECOVERY_TIMEOUT_MS), and returns when each got there, with
 * the bystander's latencies until the gauge was back.
 */
async function recovery(
  httpPort: number,
  baseline: NodeGauges,
  leftAt: number,
  bystander: Bystander,
): Promise<Recovery> {
  let gaugeBackMs: number | null = null;
  let heapBackMs: number | null = null;
  let last = baseline;
  let departure: Recovery["departure"] | undefined;
  while (Date.now() - leftAt < RECOVERY_TIMEOUT_MS) {
    last = await readGauges(httpPort);
    const at = Date.now() - leftAt;
    if (gaugeBackMs === null && last.subscriptions <= baseline.subscriptions) {
      gaugeBackMs = at;
      departure = { bystander: bystander.window(), endedAt: Date.now() };
    }
    if (heapBackMs === null && last.heapUsedBytes <= baseline.heapUsedBytes + HEAP_SLACK_BYTES)
      heapBackMs = at;
    if (gaugeBackMs !== null && heapBackMs !== null) break;
    await sleep(SAMPLE_MS);
  }
  departure ??= { bystander: bystander.window(), endedAt: Date.now() };
  return { gaugeBackMs, heapBackMs, last, departure };
}

async function measure(
  context: ScenarioContext,
  definition: BrokerDefinition,
  clients: number,
  filters: number,
  timeoutMs: number,
): Promise<Record<string, TableCell>> {
  const name = definition.name;
  const runId = `ss${randomBytes(3).toString("hex")}`;
  let target: Target | undefined;
  let bystander: Bystander | undefined;
  let swarm: SubscriberSwarm | undefined;
  let peak: PeakRss | undefined;
  try {
    target = await startTarget(context, definition);
    bystander = await Bystander.start(target.url, runId, BYSTANDER_INTERVAL_MS);
    await sleep(SETTLE_MS);
    const baseline = target.httpPort === undefined ? undefined : await readGauges(target.httpPort);
    const rssBefore = target.pid === undefined ? undefined : rssBytes(target.pid);
    if (target.pid !== undefined) peak = new PeakRss(target.pid);
    swarm = SubscriberSwarm.start(context.cleanup, GENERATOR_PROCESSES);
    bystander.mark();
    const stormStartedAt = Date.now();
    const storm = await swarm.storm(
      { url: target.url, clients, filters, qos: 1, window: WINDOW, timeoutMs, runId },
      (counts) => context.log(`${name}: ${counts.connected} connected, ${counts.granted} SUBACKed`),
    );
    const latency = bystander.window();
    const stormEndedAt = Date.now();
    const peakRss = peak?.stop();
    const held = target.httpPort === undefined ? undefined : await readGauges(target.httpPort);
    bystander.mark();
    const leavingAt = Date.now();
    await swarm.leave();
    const leftAt = Date.now();
    const back =
      target.httpPort !== undefined && baseline
        ? await recovery(target.httpPort, baseline, leftAt, bystander)
        : undefined;
    if (!back) await sleep(OTHERS_DEPARTURE_MS);
    const departure = back?.departure.bystander ?? bystander.window();
    const { stallFile } = target;
    const stalls =
      stallFile === undefined
        ? undefined
        : {
            storm: longestStallMs(stallFile, stormStartedAt, stormEndedAt),
            departure: longestStallMs(stallFile, leavingAt, back?.departure.endedAt ?? Date.now()),
          };
    const rssAfter = target.pid === undefined ? undefined : rssBytes(target.pid);
    const rate = storm.elapsedMs > 0 ? Math.round(storm.granted / (storm.elapsedMs / 1000)) : 0;
    const expected = clients * filters;
    context.log(
      `${name}: ${storm.granted}/${expected} SUBACKed in ${storm.elapsedMs} ms (${rate}/s), bystander p99 ${latency.p99Ms?.toFixed(1)} ms; departure: bystander p99 ${departure.p99Ms?.toFixed(1)} ms, loop stall max ${stalls?.departure.toFixed(0) ?? "-"} ms, gauge back ${back?.gaugeBackMs ?? "-"} ms, heap back ${back?.heapBackMs ?? "-"} ms`,
    );
    const mib = (bytes: number | undefined): number | null =>
      bytes === undefined || Number.isNaN(bytes) ? null : Math.round((bytes / MiB) * 10) / 10;
    const errors = [
      storm.granted < expected ? `${expected - storm.granted} filters not granted` : "",
      back && back.gaugeBackMs === null ? "gauge not back at its baseline" : "",
    ].filter(Boolean);
    return {
      broker: name,
      clients,
      filters,
      SUBACKed: storm.granted,
      refused: storm.refused,
      "connect failures": storm.connectFailed,
      "time (s)": storm.elapsedMs / 1000,
      "subscriptions/s": rate,
      "bystander p50 ms": round(latency.p50Ms),
      "bystander p99 ms": round(latency.p99Ms),
      "bystander max ms": round(latency.maxMs),
      "bystander late": latency.late,
      "node loop delay max ms": round(held?.loopDelayMaxMs ?? null),
      "storm loop stall max ms": round(stalls?.storm ?? null),
      "gauge baseline": baseline?.subscriptions ?? null,
      "gauge during": held?.subscriptions ?? null,
      "gauge back (s)": back?.gaugeBackMs == null ? null : back.gaugeBackMs / 1000,
      "departure bystander p50 ms": round(departure.p50Ms),
      "departure bystander p99 ms": round(departure.p99Ms),
      "departure bystander max ms": round(departure.maxMs),
      "departure bystander late": departure.late,
      "departure loop stall max ms": round(stalls?.departure ?? null),
      "heap baseline (MiB)": mib(baseline?.heapUsedBytes),
      "heap during (MiB)": mib(held?.heapUsedBytes),
      "heap back (s)": back?.heapBackMs == null ? null : back.heapBackMs / 1000,
      "heap after (MiB)": mib(back?.last.heapUsedBytes),
      "RSS before (MiB)": mib(rssBefore),
      "RSS peak (MiB)": mib(peakRss),
      "RSS after (MiB)": mib(rssAfter),
      error: errors.join("; "),
    };
  } catch (error) {
    return { broker: name, clients, filters, error: (error as Error).message };
  } finally {
    peak?.stop();
    await swarm?.close();
    await bystander?.stop();
    await target?.stop();
  }
}

function round(value: number | null): number | null {
  return value === null ? null : Math.round(value * 10) / 10;
}

export const subscribeStorm: Scenario = {
  name: "subscribe-storm",
  description:
    "N clients each subscribe to M filters at once: subscriptions/s, a bystander's QoS 1 p99 meanwhile; then they all leave: the bystander's p99 and the node's loop stalls during the departure, the subscription gauge and heap after",
  inDefaultSet: false,
  async run(context): Promise<ScenarioOutput> {
    const { options } = context;
    const requested = options.clients ?? (options.quick ? QUICK_CLIENTS : DEFAULT_CLIENTS);
    const filters = options.filters ?? (options.quick ? QUICK_FILTERS : DEFAULT_FILTERS);
    const timeoutMs = options.quick ? QUICK_STORM_TIMEOUT_MS : STORM_TIMEOUT_MS;
    const { count, note } = cappedConnections(requested);
    const brokers =
      options.brokers.length > 0 ? options.brokers : BROKERS.map((name) => findBroker(name));
    const rows: Array<Record<string, TableCell>> = [];
    for (const broker of brokers)
      rows.push(await measure(context, broker, count, filters, timeoutMs));
    return {
      rows: [],
      tables: [
        {
          title: `subscribe-storm: ${count.toLocaleString("en-US")} clients x ${filters} filters`,
          columns: [
            "broker",
            "SUBACKed",
            "refused",
            "connect failures",
            "time (s)",
            "subscriptions/s",
            "bystander p50 ms",
            "bystander p99 ms",
            "bystander max ms",
            "bystander late",
            "node loop delay max ms",
            "storm loop stall max ms",
            "gauge baseline",
            "gauge during",
            "gauge back (s)",
            "departure bystander p50 ms",
            "departure bystander p99 ms",
            "departure bystander max ms",
            "departure bystander late",
            "departure loop stall max ms",
            "heap baseline (MiB)",
            "heap during (MiB)",
            "heap back (s)",
            "heap after (MiB)",
            "RSS before (MiB)",
            "RSS peak (MiB)",
            "RSS after (MiB)",
            "error",
          ],
          rows,
          notes: [
            note,
            `raw-socket clients (clean session, keep-alive 0) over ${GENERATOR_PROCESSES} generator processes, ${WINDOW} CONNECTs awaiting CONNACK per process; each accepted client at once sends ${filters} SUBSCRIBEs, one distinct exact filter each (storm/<client>/cmd/<i>), QoS 1`,
            `subscriptions/s = filters granted / (first SUBSCRIBE written to last SUBACK read); bounded at ${timeoutMs / 1000} s`,
            `bystander: a QoS 1 publisher and subscriber on the same broker, one message every ${BYSTANDER_INTERVAL_MS} ms; latency of the messages sent during the storm (those not delivered by its end counted at their age); node loop delay max: Sluice's longest event-loop delay during the storm (nodejs_eventloop_lag_max_seconds)`,
            `after the last SUBACK every client sends DISCONNECT; Sluice's sluice_subscriptions and nodejs_heap_size_used_bytes (its /metrics) are sampled every ${SAMPLE_MS} ms until back at the baseline (heap: within ${HEAP_SLACK_BYTES / MiB} MiB), at most ${RECOVERY_TIMEOUT_MS / 1000} s; the others' RSS ${OTHERS_DEPARTURE_MS / 1000} s after. The heap is V8's used heap, garbage included until a major GC runs: an empty "heap back" means none ran in that time, not a leak (the integration tests compare after forced GCs)`,
            `departure: from the clients' DISCONNECTs until Sluice's gauge is back at its baseline (the others: ${OTHERS_DEPARTURE_MS / 1000} s); the bystander's latencies of the messages sent in it (those not delivered by its end counted at their age)`,
            `loop stall max: Sluice's longest event-loop stall in the storm and in the departure, as the lateness of a 5 ms timer in the node's process (a probe the bench preloads, bench/src/system/loop-stall-probe.ts); the older "node loop delay max" (nodejs_eventloop_lag_max_seconds) misses stalls at the bench's 100 ms scrapes: a scrape answered right after a stall, before the histogram's own timer has run, resets prom-client's histogram and the stall is lost (a 342 ms stall read as 18 ms)`,
            `sluice-baseline, sluice-redis-baseline: the same nodes from the build SLUICE_BASELINE_CLI names, for a before/after in one run`,
          ],
        },
      ],
      config: {
        requested,
        clients: count,
        filters,
        window: WINDOW,
        timeoutMs,
        brokers: brokers.map((b) => b.name),
      },
    };
  },
};
