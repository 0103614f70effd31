import {
  type NodeCpuBudget,
  type ThrottleStats,
  throttleSince,
} from "../../../harness/cpu-cgroup.js";
import type { RunningBroker } from "../brokers/broker.js";
import { type ReadinessFigures, ReadinessWatch } from "../brokers/readiness-watch.js";
import {
  type RedisActivity,
  type RedisCounters,
  readRedisCounters,
  redisActivitySince,
} from "../brokers/redis-info.js";
import { readSluiceCounters, type SluiceCounters } from "../brokers/sluice-metrics.js";
import { ContentionWindow } from "../system/cpu-contention.js";
import { mainThreadRunQueueSeconds, threadCpuSeconds } from "../system/process-cpu.js";
import { readSyscalls } from "../system/process-io.js";
import type { LoadCase, LoadProbe } from "./measure-brokers.js";
import type { ResultRow } from "./scenario.js";

/** How often each node's /readyz is asked, and how long an answer may take (Kubernetes' default). */
const READINESS_POLL = { intervalMs: 100, timeoutMs: 1_000 };
/** Beyond the load's own bounds, how long a readiness watch may outlive a stuck run. */
const READINESS_SLACK_MS = 60_000;

export interface ProcessCost {
  /** "node" (one node), "node A" (the publishers'), "node B" (the subscribers'), "redis". */
  name: string;
  pid: number;
  /** CPU seconds the process used over the measurement window; null if unreadable. */
  cpuSeconds: number | null;
  /**
   * Seconds its main thread was runnable but not running over the window (waiting for a CPU, or
   * held back by its quota); null if unreadable.
   */
  runQueueSeconds?: number | null;
  /** Its `--node-cpu` quota in cores; absent: not in a bench cgroup. */
  quotaCores?: number;
  /** Its cgroup's CFS periods over the window and those it was throttled in (cpu.stat). */
  throttle?: ThrottleStats | null;
  /**
   * A Sluice node's cluster backpressure (its /metrics, read SCRAPE_LEAD_MS before the window
   * and at its end, `overSeconds` apart): seconds it held its publishers, and seconds it did
   * not read its Redis subscription; absent: not a Sluice node.
   */
  held?: { publishersSeconds: number; subscriptionSeconds: number; overSeconds: number };
}

/** What one measurement cost, beside the generator's row. */
export interface CostFigures {
  /** The probe's own measurement window, wall clock (the generator's is the case's measureMs). */
  windowSeconds: number | null;
  processes: ProcessCost[];
  /** Redis' work over the window (INFO deltas, read syscalls); null without Redis. */
  redis: (RedisActivity & { readSyscalls: number | null }) | null;
  /** Each node's /readyz from the start of the warm-up to the end of the run; null: no HTTP port. */
  readiness: ReadinessFigures[] | null;
  /** Clients Redis cut for their output buffer during the run (its log); null without Redis. */
  redisOutputBufferCuts: number | null;
  /** sluice_redis_subscription_resets_total growth over the run, all nodes; null if no node has it. */
  nodeSubscriptionResets: number | null;
  /**
   * sluice_dropped_messages_total growth over the run by reason, all nodes (slow_consumer: QoS 0
   * to a subscriber whose socket is full); null without Sluice nodes.
   */
  nodeDroppedMessages: Record<string, number> | null;
  /** Share of the window in which some task on the machine waited for a CPU (PSI); null if unknown. */
  cpuPressurePercent: number | null;
  /** A probe reading that failed (the figures it would have given are null). */
  probeError?: string;
}

interface WindowReading {
  at: number;
  cpu: Array<number | undefined>;
  runQueue: Array<number | undefined>;
  throttle: Array<ThrottleStats | undefined>;
  redisReads: number | undefined;
  redis: Promise<{ counters: RedisCounters; statsReplyBytes: number } | undefined>;
}

/** Each Sluice node's counters, in the order of the broker's node processes, and when. */
interface NodesReading {
  at: number;
  counters: Promise<Array<SluiceCounters | null>>;
}

/**
 * The nodes' counters are read this long before the window: rendering /metrics takes a node
 * about 10 ms, which must not count in the window's CPU.
 */
const SCRAPE_LEAD_MS = 300;

function processNames(broker: RunningBroker): string[] {
  const nodes = broker.processes.filter((p) => p.role === "broker").length;
  let node = 0;
  return broker.processes.map((p) => {
    if (p.role !== "broker") return p.role;
    const name = nodes === 1 ? "node" : `node ${String.fromCharCode(65 + node)}`;
    node++;
    return name;
  });
}

/**
 * Per measurement: each broker process's and Redis' CPU over the measurement window (to the
 * nanosecond, from their threads' schedstat), Redis' commands, network bytes and read syscalls
 * over the same window, every node's /readyz polled throughout, and the subscriptions Redis
 * cut (its log) or the nodes counted as reset (their /metrics) over the whole run.
 */
export class CostProbe implements LoadProbe {
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly contention = new ContentionWindow(undefined);
  private watches: ReadinessWatch[] = [];
  private begin: WindowReading | undefined;
  private end: WindowReading | undefined;
  private nodesBefore: NodesReading | undefined;
  private nodesAfter: NodesReading | undefined;
  private cpuPressurePercent: number | null = null;
  private cutsAtStart: number | undefined;
  private countersAtStart: Promise<Array<SluiceCounters | null>> | undefined;
  private readonly errors: string[] = [];

  constructor(
    private readonly broker: RunningBroker,
    private readonly loadCase: LoadCase,
    private readonly onFinished: (row: ResultRow, figures: CostFigures) => void,
    private readonly nodeCpu?: NodeCpuBudget,
  ) {}

  onStart(): void {
    const { warmupMs, measureMs } = this.loadCase;
    this.cutsAtStart = this.broker.redis?.outputBufferCuts();
    this.countersAtStart = this.nodeCounters();
    const maxMs = warmupMs + measureMs + (this.loadCase.settle?.maxMs ?? 0) + READINESS_SLACK_MS;
    this.watches = (this.broker.httpPorts ?? []).map((port) =>
      ReadinessWatch.start(port, { ...READINESS_POLL, maxMs }),
    );
    this.timers.push(
      setTimeout(
        () => {
          this.nodesBefore = this.readNodes();
        },
        Math.max(0, warmupMs - SCRAPE_LEAD_MS),
      ),
      setTimeout(() => {
        this.begin = this.read();
        this.contention.begin();
      }, warmupMs),
      setTimeout(() => {
        this.end = this.read();
        this.nodesAfter = this.readNodes();
        this.cpuPressurePercent = this.contention.end().cpuPressurePercent;
      }, warmupMs + measureMs),
    );
  }

  async finish(row: ResultRow): Promise<void> {
    for (const timer of this.timers) clearTimeout(timer);
    const readiness = await Promise.all(this.watches.map((w) => w.stop()));
    const figures: CostFigures = {
      windowSeconds: null,
      processes: [],
      redis: null,
      readiness: this.watches.length === 0 ? null : readiness,
      redisOutputBufferCuts: null,
      nodeSubscriptionResets: null,
      nodeDroppedMessages: null,
      cpuPressurePercent: this.cpuPressurePercent,
    };
    try {
      const redis = this.broker.redis;
      if (redis && this.cutsAtStart !== undefined)
        figures.redisOutputBufferCuts = redis.outputBufferCuts() - this.cutsAtStart;
      const before = (await this.countersAtStart) ?? [];
      const after = await this.nodeCounters();
      figures.nodeSubscriptionResets = resetsSince(
        before.map((c) => c?.redisSubscriptionResets ?? null),
        after.map((c) => c?.redisSubscriptionResets ?? null),
      );
      figures.nodeDroppedMessages = droppedSince(before, after);
      Object.assign(figures, await this.windowFigures());
    } catch (error) {
      this.errors.push((error as Error).message);
    }
    if (this.errors.length > 0) figures.probeError = this.errors.join("; ");
    this.onFinished(row, figures);
  }

  /** Synchronous readings first, at the timer's moment; Redis' INFO follows a round trip later. */
  private read(): WindowReading {
    const redisPid = this.broker.redis?.process?.pid;
    const redis = this.broker.redis;
    return {
      at: performance.now(),
      cpu: this.broker.processes.map((p) => threadCpuSeconds(p.pid)),
      runQueue: this.broker.processes.map((p) => mainThreadRunQueueSeconds(p.pid)),
      throttle: this.broker.processes.map((p) => this.nodeCpu?.cgroupOf(p.pid)?.stats()),
      redisReads: redisPid === undefined ? undefined : readSyscalls(redisPid),
      redis: redis
        ? readRedisCounters(redis).catch((error: unknown) => {
            this.errors.push(`Redis INFO: ${(error as Error).message}`);
            return undefined;
          })
        : Promise.resolve(undefined),
    };
  }

  private readNodes(): NodesReading {
    return { at: performance.now(), counters: this.nodeCounters() };
  }

  private async windowFigures(): Promise<Partial<CostFigures>> {
    const { begin, end } = this;
    if (!begin || !end) return {};
    const names = processNames(this.broker);
    const nodesBefore = this.nodesBefore;
    const nodesAfter = this.nodesAfter;
    const [countersBefore, countersAfter] = await Promise.all([
      nodesBefore?.counters,
      nodesAfter?.counters,
    ]);
    const overSeconds =
      nodesBefore && nodesAfter ? (nodesAfter.at - nodesBefore.at) / 1000 : undefined;
    let node = -1;
    const processes = this.broker.processes.map((p, i): ProcessCost => {
      if (p.role === "broker") node++;
      const held = heldSince(countersBefore?.[node], countersAfter?.[node], overSeconds);
      const before = begin.cpu[i];
      const after = end.cpu[i];
      const group = this.nodeCpu?.cgroupOf(p.pid);
      const throttleBefore = begin.throttle[i];
      const throttleAfter = end.throttle[i];
      return {
        name: names[i] ?? p.role,
        pid: p.pid,
        cpuSeconds: before === undefined || after === undefined ? null : after - before,
        runQueueSeconds: difference(begin.runQueue[i], end.runQueue[i]),
        ...(group
          ? {
              quotaCores: group.quotaCores,
              throttle:
                throttleBefore && throttleAfter
                  ? throttleSince(throttleBefore, throttleAfter)
                  : null,
            }
          : {}),
        ...(p.role === "broker" && held !== undefined ? { held } : {}),
      };
    });
    const [redisBefore, redisAfter] = await Promise.all([begin.redis, end.redis]);
    return {
      windowSeconds: (end.at - begin.at) / 1000,
      processes,
      redis:
        redisBefore && redisAfter
          ? {
              ...redisActivitySince(redisBefore, redisAfter.counters),
              readSyscalls:
                begin.redisReads === undefined || end.redisReads === undefined
                  ? null
                  : end.redisReads - begin.redisReads,
            }
          : null,
    };
  }

  /** Each node's /metrics counters (null: no answer). */
  private nodeCounters(): Promise<Array<SluiceCounters | null>> {
    return Promise.all(
      (this.broker.httpPorts ?? []).map((port) => readSluiceCounters(port).catch(() => null)),
    );
  }
}

/** A node's held time between two readings; undefined without a Sluice node's answers. */
function heldSince(
  before: SluiceCounters | null | undefined,
  after: SluiceCounters | null | undefined,
  overSeconds: number | undefined,
): ProcessCost["held"] {
  if (!before || !after || overSeconds === undefined) return undefined;
  return {
    publishersSeconds: after.backpressureSeconds - before.backpressureSeconds,
    subscriptionSeconds: after.subscriptionPausedSeconds - before.subscriptionPausedSeconds,
    overSeconds,
  };
}

function difference(before: number | undefined, after: number | undefined): number | null {
  return before === undefined || after === undefined ? null : after - before;
}

/** Growth of the nodes' dropped-message counters by reason, added up; null without answers. */
export function droppedSince(
  before: ReadonlyArray<SluiceCounters | null>,
  after: ReadonlyArray<SluiceCounters | null>,
): Record<string, number> | null {
  let total: Record<string, number> | null = null;
  for (const [i, counters] of after.entries()) {
    if (!counters) continue;
    total ??= {};
    for (const [reason, count] of Object.entries(counters.dropped))
      total[reason] = (total[reason] ?? 0) + count - (before[i]?.dropped[reason] ?? 0);
  }
  return total;
}

/** Growth of the nodes' reset counters, added up; null when no node exposes one. */
export function resetsSince(
  before: ReadonlyArray<number | null>,
  after: ReadonlyArray<number | null>,
): number | null {
  let total: number | null = null;
  for (const [i, value] of after.entries()) {
    if (value === null) continue;
    total = (total ?? 0) + value - (before[i] ?? 0);
  }
  return total;
}

/** A window figure (CPU seconds, commands, bytes) per delivered message; null if not measured. */
export function perMessage(
  value: number | null | undefined,
  row: ResultRow,
  figures: CostFigures,
): number | null {
  if (value === null || value === undefined || figures.windowSeconds === null) return null;
  if (row.messagesPerSecond <= 0 || figures.windowSeconds <= 0) return null;
  return value / figures.windowSeconds / row.messagesPerSecond;
}

/** CPU µs per delivered message of the processes whose name starts with `prefix` ("node", "redis"). */
export function cpuMicrosPerMessage(
  row: ResultRow,
  figures: CostFigures,
  prefix: string,
): number | null {
  const chosen = figures.processes.filter((p) => p.name.startsWith(prefix));
  if (chosen.length === 0 || chosen.some((p) => p.cpuSeconds === null)) return null;
  const seconds = chosen.reduce((n, p) => n + (p.cpuSeconds ?? 0), 0);
  const perMessageSeconds = perMessage(seconds, row, figures);
  return perMessageSeconds === null ? null : perMessageSeconds * 1e6;
}

/** How each node's /readyz answered: "0 of 49", "3 of 49 (1 unanswered)"; null without nodes that have one. */
export function readinessSummary(readiness: readonly ReadinessFigures[] | null): {
  ready: boolean | null;
  text: string | null;
} {
  if (readiness === null) return { ready: null, text: null };
  const polls = readiness.reduce((n, r) => n + r.polls, 0);
  const failed = readiness.reduce((n, r) => n + r.failed, 0);
  const notReady = readiness.reduce((n, r) => n + r.notReady, 0) + failed;
  return {
    ready: notReady === 0,
    text: `${notReady} of ${polls}${failed > 0 ? ` (${failed} unanswered)` : ""}`,
  };
}
