import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BrokerDefinition, RunningBroker } from "../brokers/broker.js";
import { type LoadResult, type LoadSpec, runLoad } from "../generator/load-run.js";
import { protocolName } from "../generator/protocol-level.js";
import type { CrossCheck, ResultRow, ScenarioContext } from "./scenario.js";

/** One case of a scenario: the load, minus where it goes (filled in per broker). */
export type LoadCase = Omit<LoadSpec, "publisherUrls" | "subscriberUrls">;

/** The figure whose median round a row reports. */
export type MedianFigure = "messagesPerSecond" | "p99Ms";

export interface MeasureOptions {
  scenario: string;
  cases: readonly LoadCase[];
  /**
   * Which figure picks the median round: delivered msg/s (full speed) or p99 (fixed rate); a
   * function where the cases mix both.
   */
  medianBy: MedianFigure | ((loadCase: LoadCase) => MedianFigure);
  /**
   * What runs back to back within a round, so the figures a ratio compares are taken close
   * together: one case on every broker (`brokers`, the default: ratios between brokers) or
   * every case on one broker (`cases`: ratios between cases of a broker).
   */
  compare?: "brokers" | "cases";
  /** The cases of a round in the order they run (indexes into `cases`); default: as listed. */
  caseOrder?: (round: number) => readonly number[];
  /**
   * The case measured at once with a case (indexes into `cases`), in the same window on the
   * same broker, each giving its own row: for a ratio of figures that a pause or a stall
   * decides (a p99), which then hits both alike. Default: every case alone.
   */
  together?: (caseIndex: number) => number | undefined;
  /** Extra measurements with independent tools for a case against the running broker. */
  crossCheck?: (broker: RunningBroker, loadCase: LoadCase) => Promise<CrossCheck[]>;
  /** Figures of the scenario's own, taken alongside each measurement (see LoadProbe). */
  probe?: (measurement: Measurement) => LoadProbe;
}

/** One measurement of measureBrokers: a case on a broker in a round. */
export interface Measurement {
  broker: RunningBroker;
  loadCase: LoadCase;
  caseIndex: number;
  round: number;
}

/**
 * A scenario's own figures over one measurement (process CPU, Redis counters, readiness):
 * started as the warm-up begins, finished with the measurement's row, failed or not. It keeps
 * what it measured itself; finish must not throw.
 */
export interface LoadProbe {
  /** Before the load starts, every client connected: readings the run is measured against. */
  beforeStart?(): Promise<void>;
  onStart(): void;
  /** Once the subscribers have received what they will, while they are still connected. */
  onSettled?(): Promise<void>;
  finish(row: ResultRow): Promise<void>;
}

interface Started {
  definition: BrokerDefinition;
  broker?: RunningBroker;
  error?: unknown;
  /** Removes the broker's scratch folder (also on Ctrl-C, through the cleanup registry). */
  removeWorkDir: () => Promise<void>;
}

/**
 * The loop every broker-comparison scenario shares, built for a noisy shared machine: all
 * brokers are started first and stay up (idle ones cost next to nothing); then, round after
 * round, each case is measured on every broker in turn, one at a time, so the figures a ratio
 * compares are taken close together (or, with `compare: "cases"`, each broker runs every case
 * in turn); the broker order rotates each round so no broker always goes first. A row reports
 * the median round. A case that fails becomes a row with `error`;
 * the others still run. Cross-checks run once per broker and case, after the rounds.
 */
export async function measureBrokers(
  context: ScenarioContext,
  brokers: readonly BrokerDefinition[],
  {
    scenario,
    cases,
    medianBy,
    compare = "brokers",
    caseOrder,
    together,
    crossCheck,
    probe,
  }: MeasureOptions,
): Promise<ResultRow[]> {
  const started: Started[] = [];
  try {
    for (const definition of brokers) {
      const workDir = await mkdtemp(join(tmpdir(), `sluice-bench-${definition.name}-`));
      const removeWorkDir = context.cleanup.add(`${definition.name} work dir`, () =>
        rm(workDir, { recursive: true, force: true }),
      );
      context.log(`[${scenario}] starting ${definition.name}: ${definition.description}`);
      try {
        const broker = await definition.start({
          cleanup: context.cleanup,
          workDir,
          ...(context.nodeCpu ? { nodeCpu: context.nodeCpu } : {}),
        });
        try {
          unplacedNodes(context, broker);
        } catch (error) {
          await broker.stop();
          throw error;
        }
        started.push({ definition, removeWorkDir, broker });
      } catch (error) {
        context.log(`[${scenario}] ${definition.name} failed to start: ${String(error)}`);
        started.push({ definition, removeWorkDir, error });
      }
    }
    const rounds = context.options.rounds;
    const results = new Map<string, ResultRow[]>();
    const key = (broker: string, caseIndex: number): string => `${broker}#${caseIndex}`;
    const total = rounds * cases.length * started.length;
    let done = 0;
    for (let round = 0; round < rounds; round++) {
      const order = rotate(started, round);
      const caseIndexes = caseOrder?.(round) ?? [...cases.keys()];
      const schedule =
        compare === "brokers"
          ? caseIndexes.flatMap((caseIndex) => order.map((entry) => ({ entry, caseIndex })))
          : order.flatMap((entry) => caseIndexes.map((caseIndex) => ({ entry, caseIndex })));
      const measured = new Set<string>();
      for (const { entry, caseIndex } of schedule) {
        const name = entry.definition.name;
        if (measured.has(key(name, caseIndex))) continue;
        const partner = together?.(caseIndex);
        const group = partner === undefined ? [caseIndex] : [caseIndex, partner];
        const meeting = startTogether(group.length);
        const rows = await Promise.all(
          group.map((index) => {
            const loadCase = cases[index];
            if (!loadCase) throw new RangeError(`caseOrder or together named case ${index}`);
            measured.add(key(name, index));
            done++;
            const label = `[${scenario} ${done}/${total}] ${name}${protocolLabel(loadCase)} qos${loadCase.qos} ${loadCase.payloadBytes}B${
              loadCase.ratePerSecond ? ` @${loadCase.ratePerSecond}/s` : ""
            }${rounds > 1 ? ` round ${round + 1}/${rounds}` : ""}${group.length > 1 ? " (together)" : ""}`;
            const row = entry.broker
              ? measureCase(
                  context,
                  scenario,
                  entry.broker,
                  loadCase,
                  label,
                  probe?.({ broker: entry.broker, loadCase, caseIndex: index, round }),
                  meeting.arrive,
                )
              : Promise.resolve(failedRow(scenario, name, loadCase, entry.error));
            return row.finally(meeting.leave);
          }),
        );
        for (const [i, row] of rows.entries()) {
          const list = results.get(key(name, group[i] as number)) ?? [];
          list.push(row);
          results.set(key(name, group[i] as number), list);
        }
      }
    }
    const rows: ResultRow[] = [];
    for (const entry of started) {
      for (const [caseIndex, loadCase] of cases.entries()) {
        const row = median(
          results.get(key(entry.definition.name, caseIndex)) ?? [],
          typeof medianBy === "function" ? medianBy(loadCase) : medianBy,
        );
        if (crossCheck && entry.broker && row.error === undefined) {
          try {
            row.crossChecks = await crossCheck(entry.broker, loadCase);
          } catch (error) {
            context.log(
              `[${scenario}] ${entry.definition.name} cross-check failed: ${String(error)}`,
            );
          }
        }
        rows.push(row);
      }
    }
    return rows;
  } finally {
    for (const entry of started) {
      await entry.broker?.stop();
      await entry.removeWorkDir();
    }
  }
}

/**
 * Under `--node-cpu` every broker node must have its quota: a broker whose nodes the bench could
 * not place (one started some other way) fails rather than being measured unconstrained.
 */
export function unplacedNodes(context: ScenarioContext, broker: RunningBroker): void {
  const budget = context.nodeCpu;
  if (!budget) return;
  const loose = broker.processes.filter((p) => p.role === "broker" && !budget.cgroupOf(p.pid));
  if (loose.length > 0)
    throw new Error(
      `${broker.name}: ${loose.length} node process(es) without a --node-cpu cgroup (pids ${loose.map((p) => p.pid).join(", ")})`,
    );
}

/** " MQTT 5" in a progress line where a case sets the protocol level; nothing where it does not. */
function protocolLabel(loadCase: LoadCase): string {
  return loadCase.protocolVersion === undefined
    ? ""
    : ` MQTT ${protocolName(loadCase.protocolVersion)}`;
}

function rotate<T>(items: readonly T[], by: number): T[] {
  const shift = items.length === 0 ? 0 : by % items.length;
  return [...items.slice(shift), ...items.slice(0, shift)];
}

/** The round with the median figure (the lower middle of an even count), failed rounds aside. */
export function medianRound(rounds: readonly ResultRow[], by: MedianFigure): ResultRow | undefined {
  const sorted = rounds.filter((r) => r.error === undefined).sort((a, b) => a[by] - b[by]);
  return sorted[Math.floor((sorted.length - 1) / 2)];
}

/**
 * The round with the median figure, carrying every round's figures so the spread is visible.
 * A failed round counts as failed only if every round failed.
 */
export function median(rounds: ResultRow[], by: MedianFigure): ResultRow {
  const first = rounds[0];
  if (!first) throw new Error("no rounds measured");
  const chosen = medianRound(rounds, by);
  if (!chosen) return first;
  return {
    ...chosen,
    rounds: rounds.map((r) => ({
      messagesPerSecond: r.messagesPerSecond,
      p50Ms: r.p50Ms,
      p99Ms: r.p99Ms,
      lost: r.lost,
      duplicates: r.duplicates,
      ...(r.error === undefined ? {} : { error: r.error }),
    })),
  };
}

/**
 * Measurements started together: each arrives once its clients are connected and starts its
 * load when all have; one that ends first (failed before arriving) lets the others go.
 */
function startTogether(count: number): { arrive: () => Promise<void>; leave: () => void } {
  let waiting = count;
  let release: () => void = () => {};
  const all = new Promise<void>((resolve) => {
    release = resolve;
  });
  let left = false;
  return {
    arrive: () => {
      if (--waiting <= 0) release();
      return all;
    },
    leave: () => {
      if (left) return;
      left = true;
      release();
    },
  };
}

async function measureCase(
  context: ScenarioContext,
  scenario: string,
  broker: RunningBroker,
  loadCase: LoadCase,
  label: string,
  probe: LoadProbe | undefined,
  arrive?: () => Promise<void>,
): Promise<ResultRow> {
  const row = await loadRow(context, scenario, broker, loadCase, label, probe, arrive);
  await probe?.finish(row);
  return row;
}

async function loadRow(
  context: ScenarioContext,
  scenario: string,
  broker: RunningBroker,
  loadCase: LoadCase,
  label: string,
  probe: LoadProbe | undefined,
  arrive?: () => Promise<void>,
): Promise<ResultRow> {
  const spec: LoadSpec = {
    ...loadCase,
    publisherUrls: broker.publisherUrls,
    subscriberUrls: broker.subscriberUrls,
  };
  let lastReceived = 0;
  let lastPublished = 0;
  let lastAt = 0;
  try {
    const result = await runLoad(spec, context.cleanup, {
      watch: broker.processes,
      ...(probe ? { onStart: () => probe.onStart() } : {}),
      ...(probe?.beforeStart || arrive
        ? {
            beforeStart: async () => {
              await probe?.beforeStart?.();
              await arrive?.();
            },
          }
        : {}),
      ...(probe?.onSettled ? { onSettled: () => probe.onSettled?.() ?? Promise.resolve() } : {}),
      onProgress: ({ elapsedMs, published, received }) => {
        const seconds = (elapsedMs - lastAt) / 1000;
        const phase =
          elapsedMs < loadCase.warmupMs
            ? "warm-up"
            : elapsedMs < loadCase.warmupMs + loadCase.measureMs
              ? "measuring"
              : "draining";
        context.log(
          `${label} ${(elapsedMs / 1000).toFixed(0)}s ${phase}: published ${rate(published - lastPublished, seconds)}/s, delivered ${rate(received - lastReceived, seconds)}/s`,
        );
        lastReceived = received;
        lastPublished = published;
        lastAt = elapsedMs;
      },
    });
    const row = toRow(scenario, broker.name, loadCase, result);
    context.log(
      `${label}: ${Math.round(row.messagesPerSecond).toLocaleString("en-US")} msg/s, p50 ${row.p50Ms.toFixed(2)} ms, p99 ${row.p99Ms.toFixed(2)} ms, lost ${row.lost}, dup ${row.duplicates}, generator CPU pub ${cpuList(row.generatorCpu.publishers)} sub ${cpuList(row.generatorCpu.subscribers)}${row.generatorCpu.saturated ? " (SATURATED)" : ""}, broker CPU ${row.brokerCpuPercent?.toFixed(0) ?? "?"}%`,
    );
    return row;
  } catch (error) {
    context.log(`${label}: failed: ${String(error)}`);
    return failedRow(scenario, broker.name, loadCase, error);
  }
}

function rate(count: number, seconds: number): string {
  return seconds > 0 ? Math.round(count / seconds).toLocaleString("en-US") : "0";
}

function cpuList(values: number[]): string {
  return values.map((v) => `${v.toFixed(0)}%`).join("+");
}

export function toRow(
  scenario: string,
  broker: string,
  loadCase: LoadCase,
  result: LoadResult,
): ResultRow {
  return {
    scenario,
    broker,
    qos: loadCase.qos,
    payloadBytes: loadCase.payloadBytes,
    ...(loadCase.protocolVersion === undefined
      ? {}
      : { protocolVersion: loadCase.protocolVersion }),
    pattern: loadCase.pattern,
    publishers: loadCase.publishers,
    subscribers: loadCase.subscribers,
    targetRate: loadCase.ratePerSecond ?? null,
    inflightWindow: loadCase.inflightWindow,
    endToEndWindow: loadCase.endToEndWindow,
    messagesPerSecond: result.messagesPerSecond,
    publishedPerSecond: result.publishedPerSecond,
    published: result.published,
    p50Ms: result.latency.p50Ms,
    p99Ms: result.latency.p99Ms,
    p999Ms: result.latency.p999Ms,
    maxMs: result.latency.maxMs,
    latencySamples: result.latency.samples,
    lost: result.lost,
    duplicates: result.duplicates,
    unacknowledged: result.unacknowledged,
    ...(loadCase.pattern === "shared"
      ? {
          memberReceived: [...result.subscriptions]
            .sort((a, b) => a.index - b.index)
            .map((s) => s.received),
        }
      : {}),
    generatorProcesses: {
      publishers: result.generatorCpu.publisherProcesses.length,
      subscribers: result.generatorCpu.subscriberProcesses.length,
    },
    generatorCpu: {
      publishers: result.generatorCpu.publisherProcesses,
      subscribers: result.generatorCpu.subscriberProcesses,
      saturated: result.generatorCpu.saturated,
    },
    brokerCpuPercent: result.processCpu.broker ?? null,
    redisCpuPercent: result.processCpu.redis ?? null,
    crossChecks: [],
  };
}

function failedRow(
  scenario: string,
  broker: string,
  loadCase: LoadCase,
  error: unknown,
): ResultRow {
  return {
    ...toRow(scenario, broker, loadCase, {
      messagesPerSecond: 0,
      publishedPerSecond: 0,
      latency: { p50Ms: 0, p99Ms: 0, p999Ms: 0, maxMs: 0, meanMs: 0, samples: 0 },
      lost: 0,
      duplicates: 0,
      published: 0,
      unacknowledged: 0,
      subscriptions: [],
      generatorCpu: { publisherProcesses: [], subscriberProcesses: [], saturated: false },
      processCpu: {},
    }),
    error: error instanceof Error ? error.message : String(error),
  };
}
