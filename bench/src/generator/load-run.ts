import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import hdr from "hdr-histogram-js";
import { type CleanupRegistry, withTimeout } from "../lifecycle/cleanup-registry.js";
import { ProcessCpuMeter, type WatchedProcess } from "../system/process-cpu.js";
import { cpuPercent } from "./cpu-window.js";
import type {
  ClientSettings,
  CoordinatorMessage,
  CpuWindow,
  PublisherReport,
  SubscriptionReport,
  WorkerMessage,
} from "./messages.js";
import {
  type ClientAddresses,
  type LoadShape,
  planClients,
  type SubscriberPlan,
  splitAcross,
} from "./plan.js";
import { createLatencyHistogram } from "./subscriber-set.js";

const WORKER = fileURLToPath(new URL("./worker.js", import.meta.url));
/** A generator process above this share of one core is the limit, not the broker. */
export const SATURATED_CPU_PERCENT = 90;
const CONNECT_TIMEOUT_MS = 20_000;
/** After the publishers stop: how long subscribers may take to receive what is still on the way. */
const SETTLE_MAX_MS = 5_000;
/** ... and how long without a new message counts as "nothing more is coming". */
const SETTLE_QUIET_MS = 750;

export interface LoadSpec extends LoadShape, ClientSettings {
  publisherUrls: string[];
  subscriberUrls: string[];
  /** Local addresses the clients' sockets bind to (see ClientAddresses); absent: the OS picks. */
  clientAddresses?: ClientAddresses;
  /** Total target rate (messages/s over all publishers); absent: full speed. */
  ratePerSecond?: number;
  /** Unacknowledged messages one publisher may have out at once. */
  inflightWindow: number;
  /** Messages one publisher may be ahead of its slowest subscriber (see PublisherSetup). */
  endToEndWindow: number;
  /** Messages one publisher sends in the whole run, at most (see PublisherSetup). */
  maxMessagesPerPublisher?: number;
  /**
   * Each subscriber's fixed processing time per message (see SubscriberSetup): subscribers
   * that each take at most 1000 / serviceMs messages per second; absent: as fast as they read.
   */
  subscriberServiceMs?: number;
  /**
   * After the publishers stop, how long subscribers may take to receive what is still on the
   * way, and how long without a new message ends the wait (defaults SETTLE_MAX_MS and
   * SETTLE_QUIET_MS): longer where a run leaves a busy broker a backlog to deliver.
   */
  settle?: { maxMs: number; quietMs: number };
  warmupMs: number;
  measureMs: number;
  /** Generator processes for each side (each process is single-threaded). */
  publisherProcesses: number;
  subscriberProcesses: number;
}

export interface LatencySummary {
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  meanMs: number;
  samples: number;
}

export interface GeneratorCpu {
  /** Percent of one core, one entry per generator process. */
  publisherProcesses: number[];
  subscriberProcesses: number[];
  /** Some generator process was at or above SATURATED_CPU_PERCENT: the figure is a floor. */
  saturated: boolean;
}

export interface LoadResult {
  /** Messages delivered to subscribers per second in the measurement window. */
  messagesPerSecond: number;
  /** Messages published per second in the window (what the broker was offered). */
  publishedPerSecond: number;
  latency: LatencySummary;
  /** Messages published in the whole run that some subscription that should have had them never got. */
  lost: number;
  duplicates: number;
  published: number;
  /** Messages published but not acknowledged (QoS 1/2) when the run ended. */
  unacknowledged: number;
  subscriptions: SubscriptionReport[];
  generatorCpu: GeneratorCpu;
  /** Percent of one core by role, for the processes the caller asked to watch. */
  processCpu: Record<string, number>;
}

export interface LoadHooks {
  /** About once a second during the load: cumulative published and received counts. */
  onProgress?: (progress: { elapsedMs: number; published: number; received: number }) => void;
  /** Processes (brokers, Redis) whose CPU to measure over the window. */
  watch?: readonly WatchedProcess[];
  /**
   * Once every client is connected, before any publishes (awaited, bounded by the caller): for
   * readings the run is measured against, such as counters' starting values.
   */
  beforeStart?: () => Promise<void>;
  /**
   * Once every client is connected, as the warm-up begins (the measurement window opens
   * `warmupMs` later): for load that must run alongside, such as the flood scenario's attackers.
   */
  onStart?: () => void;
  /**
   * Once the subscribers have received what they will, before they disconnect: for readings
   * that need them connected (a shared group's series go with its last member). Bounded by the
   * caller.
   */
  onSettled?: () => Promise<void>;
}

/** A generator process and the messages it has sent us. */
class Worker {
  private readonly inbox: WorkerMessage[] = [];
  private waiters: Array<() => void> = [];
  progress = 0;
  failure: string | undefined;

  constructor(
    readonly child: ChildProcess,
    onDelivered: (through: Array<number | null>) => void = () => {},
  ) {
    child.on("message", (message: WorkerMessage) => {
      if (message.type === "progress") this.progress = message.count;
      else if (message.type === "delivered") onDelivered(message.through);
      else if (message.type === "failed") this.failure ??= message.error;
      else this.inbox.push(message);
      for (const waiter of this.waiters.splice(0)) waiter();
    });
    child.on("exit", (code, signal) => {
      this.failure ??= `generator process exited (${code ?? signal})`;
      for (const waiter of this.waiters.splice(0)) waiter();
    });
  }

  send(message: CoordinatorMessage): void {
    if (!this.child.connected) return;
    // A worker a signal's cleanup is killing can still look connected: the write then fails
    // (EPIPE), which without a callback is an 'error' event nobody listens to, and the bench
    // died with exit 1 instead of its signal's code.
    this.child.send(message, (error) => {
      if (error === null) return;
      this.failure ??= `generator process unreachable (${error.message})`;
      for (const waiter of this.waiters.splice(0)) waiter();
    });
  }

  /** The next message of a type, failing as soon as the process reports a failure. */
  async next<T extends WorkerMessage["type"]>(
    type: T,
  ): Promise<Extract<WorkerMessage, { type: T }>> {
    for (;;) {
      const index = this.inbox.findIndex((m) => m.type === type);
      if (index >= 0) return this.inbox.splice(index, 1)[0] as Extract<WorkerMessage, { type: T }>;
      if (this.failure) throw new Error(this.failure);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }
}

/**
 * Runs one measurement: starts the generator processes, connects and subscribes, publishes for
 * warm-up plus the measurement window, lets the last messages arrive, collects every process's
 * figures and stops the processes again (also when anything fails or times out).
 */
export async function runLoad(
  spec: LoadSpec,
  cleanup: CleanupRegistry,
  hooks: LoadHooks = {},
): Promise<LoadResult> {
  const runId = randomBytes(4).toString("hex");
  const plan = planClients(
    spec,
    runId,
    spec.publisherUrls,
    spec.subscriberUrls,
    spec.clientAddresses,
  );
  const settings: ClientSettings = {
    qos: spec.qos,
    payloadBytes: spec.payloadBytes,
    ...(spec.tls ? { tls: spec.tls } : {}),
    ...(spec.credentials ? { credentials: spec.credentials } : {}),
    ...(spec.protocolVersion === undefined ? {} : { protocolVersion: spec.protocolVersion }),
    ...(spec.clientKind === undefined ? {} : { clientKind: spec.clientKind }),
  };
  const publisherGroups = splitAcross(plan.publishers, spec.publisherProcesses);
  // A shared group's losses are counted over all its members: they share one process.
  const subscriberGroups =
    spec.pattern === "shared"
      ? [plan.subscribers]
      : splitAcross(plan.subscribers, spec.subscriberProcesses);
  const stops: Array<() => Promise<void>> = [];
  const spawnWorker = (
    name: string,
    onDelivered?: (through: Array<number | null>) => void,
  ): Worker => {
    const child = fork(WORKER, [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    stops.push(cleanup.addChild(`generator ${name}`, child, 1_000));
    return new Worker(child, onDelivered);
  };
  // End-to-end flow control: each subscriber process's view, merged (slowest wins), relayed.
  const reported: Array<Array<number | null>> = [];
  const relay = (index: number, through: Array<number | null>): void => {
    reported[index] = through;
    const merged = plan.publishers.map((p) => {
      let slowest: number | null = null;
      for (const view of reported) {
        const seen = view?.[p.index];
        if (seen !== null && seen !== undefined)
          slowest = slowest === null ? seen : Math.min(slowest, seen);
      }
      return slowest;
    });
    for (const worker of publishers) worker.send({ type: "delivered", through: merged });
  };
  const publishers = publisherGroups.map((_, i) => spawnWorker(`publishers-${i}`));
  const subscribers = subscriberGroups.map((_, i) =>
    spawnWorker(`subscribers-${i}`, (through) => relay(i, through)),
  );
  const all = [...publishers, ...subscribers];
  try {
    // Subscribers first, so nothing published is missed.
    subscribers.forEach((worker, i) => {
      worker.send({
        type: "setup-subscribers",
        ...settings,
        subscribers: subscriberGroups[i] ?? [],
        publisherCount: plan.publishers.length,
        ...(spec.subscriberServiceMs === undefined ? {} : { serviceMs: spec.subscriberServiceMs }),
      });
    });
    await withTimeout(
      Promise.all(subscribers.map((w) => w.next("ready"))),
      CONNECT_TIMEOUT_MS,
      "subscribing",
    );
    const perPublisherRate =
      spec.ratePerSecond === undefined ? undefined : spec.ratePerSecond / spec.publishers;
    publishers.forEach((worker, i) => {
      worker.send({
        type: "setup-publishers",
        ...settings,
        publishers: publisherGroups[i] ?? [],
        inflightWindow: spec.inflightWindow,
        endToEndWindow: spec.endToEndWindow,
        ...(perPublisherRate === undefined ? {} : { ratePerPublisher: perPublisherRate }),
        ...(spec.maxMessagesPerPublisher === undefined
          ? {}
          : { maxMessagesPerPublisher: spec.maxMessagesPerPublisher }),
      });
    });
    await withTimeout(
      Promise.all(publishers.map((w) => w.next("ready"))),
      CONNECT_TIMEOUT_MS,
      "connecting publishers",
    );

    const drainMs = 5_000;
    const start = {
      type: "start",
      warmupMs: spec.warmupMs,
      measureMs: spec.measureMs,
      drainMs,
    } as const;
    await hooks.beforeStart?.();
    const startedAt = performance.now();
    for (const worker of all) worker.send(start);
    hooks.onStart?.();
    const processMeter = new ProcessCpuMeter(hooks.watch ?? []);
    let processCpu: Record<string, number> | undefined;
    const windowTimers = [
      setTimeout(() => processMeter.begin(), spec.warmupMs),
      setTimeout(() => {
        processCpu = processMeter.end();
      }, spec.warmupMs + spec.measureMs),
    ];
    const sum = (workers: Worker[]): number => workers.reduce((n, w) => n + w.progress, 0);
    const ticker = setInterval(
      () =>
        hooks.onProgress?.({
          elapsedMs: performance.now() - startedAt,
          published: sum(publishers),
          received: sum(subscribers),
        }),
      1_000,
    );
    try {
      const publishedReports = await withTimeout(
        Promise.all(publishers.map((w) => w.next("published"))),
        spec.warmupMs + spec.measureMs + drainMs + 5_000,
        "publishing",
      );
      const publisherReports = publishedReports.flatMap((r) => r.publishers);
      const published: Record<number, number> = {};
      for (const report of publisherReports) published[report.index] = report.published;
      const expected = expectedDeliveries(plan.subscribers, published);
      await settle(
        () => sum(subscribers),
        expected,
        spec.settle ?? { maxMs: SETTLE_MAX_MS, quietMs: SETTLE_QUIET_MS },
      );
      await hooks.onSettled?.();
      for (const worker of subscribers) worker.send({ type: "finish", published });
      const reports = await withTimeout(
        Promise.all(subscribers.map((w) => w.next("report"))),
        10_000,
        "collecting subscriber reports",
      );
      return summarize(
        spec,
        publishedReports,
        publisherReports,
        reports,
        processCpu ?? processMeter.end(),
      );
    } finally {
      clearInterval(ticker);
      for (const timer of windowTimers) clearTimeout(timer);
    }
  } finally {
    for (const worker of all) worker.send({ type: "exit" });
    await Promise.allSettled(stops.map((stop) => stop()));
  }
}

/** Deliveries the subscribers should receive in all: a shared group's, once for the group. */
export function expectedDeliveries(
  subscribers: readonly SubscriberPlan[],
  published: Record<number, number>,
): number {
  const groups = new Set<string>();
  let expected = 0;
  for (const s of subscribers) {
    if (s.group !== undefined) {
      if (groups.has(s.group)) continue;
      groups.add(s.group);
    }
    expected += s.expectsFrom.reduce((m, p) => m + (published[p] ?? 0), 0);
  }
  return expected;
}

/** Waits until every expected message arrived, or nothing arrived for a while (bounded). */
async function settle(
  received: () => number,
  expected: number,
  { maxMs, quietMs }: { maxMs: number; quietMs: number },
): Promise<void> {
  const deadline = performance.now() + maxMs;
  let last = received();
  let lastChange = performance.now();
  while (performance.now() < deadline && received() < expected) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const now = received();
    if (now !== last) {
      last = now;
      lastChange = performance.now();
    } else if (performance.now() - lastChange >= quietMs) {
      return;
    }
  }
}

function summarize(
  spec: LoadSpec,
  publishedReports: Array<{ windowPublished: number; cpu: CpuWindow }>,
  publisherReports: PublisherReport[],
  subscriberReports: Array<{
    subscriptions: SubscriptionReport[];
    windowReceived: number;
    histogram: string;
    cpu: CpuWindow;
  }>,
  processCpu: Record<string, number>,
): LoadResult {
  const seconds = spec.measureMs / 1000;
  const histogram = createLatencyHistogram();
  for (const report of subscriberReports) {
    const part = hdr.decodeFromCompressedBase64(report.histogram);
    histogram.add(part);
    part.destroy();
  }
  const ms = (micros: number): number => micros / 1000;
  const subscriptions = subscriberReports.flatMap((r) => r.subscriptions);
  const publisherCpu = publishedReports.map((r) => cpuPercent(r.cpu));
  const subscriberCpu = subscriberReports.map((r) => cpuPercent(r.cpu));
  const result: LoadResult = {
    messagesPerSecond: subscriberReports.reduce((n, r) => n + r.windowReceived, 0) / seconds,
    publishedPerSecond: publishedReports.reduce((n, r) => n + r.windowPublished, 0) / seconds,
    latency: {
      p50Ms: ms(histogram.getValueAtPercentile(50)),
      p99Ms: ms(histogram.getValueAtPercentile(99)),
      p999Ms: ms(histogram.getValueAtPercentile(99.9)),
      maxMs: ms(histogram.maxValue),
      meanMs: ms(histogram.mean),
      samples: histogram.totalCount,
    },
    lost: subscriptions.reduce((n, s) => n + s.lost, 0),
    duplicates: subscriptions.reduce((n, s) => n + s.duplicates, 0),
    published: publisherReports.reduce((n, r) => n + r.published, 0),
    unacknowledged: publisherReports.reduce((n, r) => n + r.published - r.acknowledged, 0),
    subscriptions,
    generatorCpu: {
      publisherProcesses: publisherCpu,
      subscriberProcesses: subscriberCpu,
      saturated: [...publisherCpu, ...subscriberCpu].some((cpu) => cpu >= SATURATED_CPU_PERCENT),
    },
    processCpu,
  };
  histogram.destroy();
  return result;
}
