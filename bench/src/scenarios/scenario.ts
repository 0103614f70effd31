import type { NodeCpuBudget } from "../../../harness/cpu-cgroup.js";
import type { BrokerDefinition } from "../brokers/broker.js";
import type { ClientKind } from "../generator/load-client.js";
import type { QoS } from "../generator/messages.js";
import type { TopicPattern } from "../generator/plan.js";
import type { ProtocolLevel } from "../generator/protocol-level.js";
import type { CleanupRegistry } from "../lifecycle/cleanup-registry.js";
import type { PhaseName } from "./phase-selection.js";

/** Settings of one bench invocation that every scenario honours. */
export interface RunOptions {
  /** A very short smoke run: shorter windows, fewer cases. */
  quick: boolean;
  warmupMs: number;
  measureMs: number;
  /** Measurements of each case on each broker; rows report the median. */
  rounds: number;
  /** Brokers to measure (all of a scenario's when empty). */
  brokers: readonly BrokerDefinition[];
  publisherProcesses: number;
  subscriberProcesses: number;
  /**
   * Which cases also run the independent tools: `anchor` = 64 B at QoS 0 and 1 (the issue's
   * reference case), `all` = every throughput case, `none`.
   */
  crossCheck: "anchor" | "all" | "none";
  /**
   * Clients of the connection scenarios (connections, storm) or pairs of failover, instead of
   * their defaults: a modest N on a loaded machine.
   */
  clients?: number;
  /** Filters each client of the subscribe-storm scenario subscribes to, instead of its default. */
  filters?: number;
  /** The mqtt5 scenario's generator client, instead of its default (raw). */
  clientKind?: ClientKind;
  /**
   * `--phases`: only these phases of a scenario that has phases (`Scenario.phases`), each
   * maybe narrowed to one QoS ("rate:0"); absent: all of them.
   */
  phases?: readonly string[];
  /**
   * `--node-cpu`: cores of CPU each broker node process gets (a cgroup of its own with that
   * CFS quota); absent: nodes take what the machine gives them.
   */
  nodeCpu?: number;
}

export interface ScenarioContext {
  options: RunOptions;
  cleanup: CleanupRegistry;
  /** Progress for a person watching (a line per second while load runs). */
  log: (line: string) => void;
  workDir: string;
  /** Where broker nodes get their CPU quota (`--node-cpu`), for scenarios that take it. */
  nodeCpu?: NodeCpuBudget;
}

/** A figure from a tool nobody here wrote, measured against the same broker in the same case. */
export interface CrossCheck {
  tool: string;
  /** What the tool's figure means, e.g. "end-to-end deliveries/s" or "publishes/s per client". */
  measures: string;
  messagesPerSecond: number;
  /** CPU of the tool's processes (percent of one core, summed). */
  toolCpuPercent?: number;
  error?: string;
}

/** One measured case: a row of the JSON `results`, the table and the chart. */
export interface ResultRow {
  scenario: string;
  broker: string;
  qos: QoS;
  payloadBytes: number;
  /** The clients' MQTT protocol level, where the scenario set one (mqtt5); absent: 3.1.1. */
  protocolVersion?: ProtocolLevel;
  pattern: TopicPattern;
  publishers: number;
  subscribers: number;
  /** Offered load in messages/s; null at full speed. */
  targetRate: number | null;
  inflightWindow: number;
  /** Messages a publisher may be ahead of its subscriber (end-to-end flow control). */
  endToEndWindow: number;
  /** End-to-end deliveries per second to subscribers in the measurement window. */
  messagesPerSecond: number;
  publishedPerSecond: number;
  /** Messages published in the whole run, warm-up included (`lost` counts among these). */
  published: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  latencySamples: number;
  lost: number;
  duplicates: number;
  unacknowledged: number;
  /** A shared group's members: messages each received in the whole run (the `shared` pattern). */
  memberReceived?: number[];
  generatorProcesses: { publishers: number; subscribers: number };
  /** Percent of one core per generator process. */
  generatorCpu: { publishers: number[]; subscribers: number[]; saturated: boolean };
  /** Percent of one core, all broker processes added up (two for a 2-node cluster). */
  brokerCpuPercent: number | null;
  redisCpuPercent: number | null;
  crossChecks: CrossCheck[];
  /** Every round's figures when the row is the median of several. */
  rounds?: Array<{
    messagesPerSecond: number;
    p50Ms: number;
    p99Ms: number;
    lost: number;
    duplicates: number;
    error?: string;
  }>;
  error?: string;
}

/** A cell of a scenario's own table: a figure, a word, or nothing measured. */
export type TableCell = string | number | boolean | null;

/**
 * A table for scenarios whose figures are not message rates (connections, storm, failover,
 * security overhead): its own columns, written to the JSON `tables` and the Markdown report.
 */
export interface ScenarioTable {
  title: string;
  /** Column keys in display order; each row has a cell (or nothing) for each. */
  columns: string[];
  rows: Array<Record<string, TableCell>>;
  /** What a reader must know to read the figures (caps, how something was measured). */
  notes?: string[];
}

export interface ScenarioOutput {
  /** Message-path rows (throughput, latency); empty for scenarios that only have tables. */
  rows: ResultRow[];
  tables?: ScenarioTable[];
  /** The scenario's settings, recorded in the JSON file. */
  config: Record<string, unknown>;
}

/** A named benchmark (`npm run bench -- <name>`). New ones register in registry.ts. */
export interface Scenario {
  name: string;
  description: string;
  /** Part of the default set (`npm run bench` with no scenario named). */
  inDefaultSet: boolean;
  /** The phases `--phases` can pick from; absent: the scenario runs whole, `--phases` refused. */
  phases?: readonly PhaseName[];
  /** Whether `--node-cpu` applies (its brokers' nodes get the quota); absent: the option is refused. */
  nodeCpu?: boolean;
  run(context: ScenarioContext): Promise<ScenarioOutput>;
}
