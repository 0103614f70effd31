import { randomBytes } from "node:crypto";
import { observeAfterHeal, observeSharedAfterHeal } from "./chaos-checks.js";
import { ChaosCluster, type ChaosClusterOptions } from "./chaos-cluster.js";
import { ChaosWorkload, type WorkloadOptions } from "./chaos-workload.js";
import { withDeadline } from "./deadline.js";
import { History, tally, type Violation } from "./history.js";

export interface ChaosScenario {
  name: string;
  cluster: ChaosClusterOptions;
  workload?: Partial<
    Pick<
      WorkloadOptions,
      "publishersPerQos" | "subscribers" | "willClients" | "intervalMs" | "sharedMembers"
    >
  >;
  /** The node whose fencing is timed (the one the fault isolates), if any. */
  watched?: string;
  /** Traffic before the fault, in ms. */
  warmupMs?: number;
  /**
   * Whether one will client is killed (socket destroyed) 100 ms into the fault, its will then
   * due exactly once (default true). Off where the fault loses what Redis held.
   */
  killWill?: boolean;
  /**
   * Runs the fault with the workload going; resolves once it is healed (every fault removes
   * itself after its time, and the runner heals everything in any case), with figures of its
   * own for the report, if any.
   */
  fault(cluster: ChaosCluster, workload: ChaosWorkload): Promise<ChaosExtra | undefined>;
  /** How long the run may take to deliver what was acknowledged after the heal. */
  settleMs?: number;
}

/** A scenario's own figures (e.g. when a Sentinel switched), in its report. */
export type ChaosExtra = Record<string, number | boolean | undefined>;

export interface ChaosReport {
  name: string;
  /** From the fault's start to the watched node fencing itself (`redis.fenced`); none: never. */
  fencedAfterMs: number | undefined;
  /** From the heal to the watched node serving again (`redis.unfenced`); none: it never fenced. */
  readyAgainMs: number | undefined;
  /** From the heal until every acknowledged QoS 1/2 message had reached every subscriber. */
  recoveredAfterMs: number | undefined;
  faultMs: number;
  violations: Violation[];
  summary: ReturnType<History["summary"]>;
  extra: ChaosExtra;
  /** Shared members per node as the fault began (from the nodes' logs); empty without any. */
  sharedSpread: Record<string, number>;
}

/**
 * What a persistent session resuming on another node puts at stake: its stored queue before its
 * live messages (order), and a message published as it resumes once, not from both (QoS 2).
 * Scenarios where sessions move assert these in a test of their own (src/engine/resume-gate.ts).
 */
export const RESUME_RACE = ["order", "no-qos2-duplicates"] as const;

/** A report for a log line or a results file: violations tallied per property. */
export function printable(report: ChaosReport): Record<string, unknown> {
  const { violations, ...rest } = report;
  return { ...rest, violations: tally(violations) };
}

/** Writes the report as one TAP comment line (the test runner's output keeps it). */
export function logReport(report: ChaosReport): void {
  process.stdout.write(`# ${JSON.stringify(printable(report))}\n`);
}

/** The violations of the properties a scenario asserts (all but `except`), tallied. */
export function broken(
  report: ChaosReport,
  except: ReadonlyArray<Violation["property"]> = [],
): Record<string, { count: number; first: string }> {
  return tally(report.violations.filter((v) => !except.includes(v.property)));
}

/**
 * One chaos run: a fresh cluster in a fault network, the workload, the fault, the heal, then the
 * history's checks. Everything is stopped whatever happens; the report carries the figures
 * issue 17 asks for (time until fenced, until recovered, duplicates, QoS 0 losses).
 */
export async function runChaos(scenario: ChaosScenario): Promise<ChaosReport> {
  const run = `c${randomBytes(3).toString("hex")}`;
  const history = new History();
  const cluster = await ChaosCluster.start(scenario.cluster);
  let workload: ChaosWorkload | undefined;
  try {
    const lb = cluster.lb;
    if (!lb) throw new Error("the cluster has no load balancer");
    workload = await ChaosWorkload.start({
      url: lb.url,
      history,
      run,
      publishersPerQos: 2,
      subscribers: 2,
      willClients: 4,
      intervalMs: 20,
      ...scenario.workload,
    });
    await new Promise((resolve) => setTimeout(resolve, scenario.warmupMs ?? 500));
    const watched = scenario.watched === undefined ? undefined : cluster.node(scenario.watched);
    const faultAt = Date.now();
    const fenced = watched?.process
      .waitForLog((l) => l.event === "redis.fenced" && Number(l.time) >= faultAt)
      .catch(() => undefined);
    const running = workload;
    const sharedSpread = spreadOf(cluster, workload.sharedMemberIds);
    // One shared member's connection dropped too: the group moves what it had not acknowledged.
    const kill = setTimeout(() => {
      const id = running.willClientIds[1];
      if (id !== undefined && scenario.killWill !== false) running.killWillClient(id);
      const member = running.sharedMemberIds[0];
      if (member !== undefined) running.dropSharedMember(member);
    }, 100);
    let extra: ChaosExtra;
    try {
      extra = (await scenario.fault(cluster, workload)) ?? {};
    } finally {
      clearTimeout(kill);
    }
    await cluster.healAll();
    const healedAt = Date.now();
    const fencedLine = await Promise.race([fenced, Promise.resolve(undefined)]);
    let readyAgainMs: number | undefined;
    if (fencedLine !== undefined && watched) {
      const line = await withDeadline(
        watched.process.waitForLog(
          (l) => l.event === "redis.unfenced" && Number(l.time) >= Number(fencedLine.time),
        ),
        30_000,
        `${watched.name} serving again after the heal`,
      );
      readyAgainMs = Math.max(0, Number(line.time) - healedAt);
    }
    workload.stopPublishing();
    const settled = await workload.settle(scenario.settleMs ?? 30_000);
    const recoveredAfterMs = settled ? Date.now() - healedAt : undefined;
    await observeAfterHeal(cluster, history, run);
    const group = workload.sharedGroup;
    if (group !== undefined) await observeSharedAfterHeal(cluster, history, group);
    return {
      name: scenario.name,
      fencedAfterMs: fencedLine === undefined ? undefined : Number(fencedLine.time) - faultAt,
      readyAgainMs,
      recoveredAfterMs,
      faultMs: healedAt - faultAt,
      violations: history.check(),
      summary: history.summary(),
      extra,
      sharedSpread,
    };
  } finally {
    await workload?.end();
    await cluster.stop();
  }
}

/** How many of `clientIds` each node holds, from its log. */
function spreadOf(cluster: ChaosCluster, clientIds: readonly string[]): Record<string, number> {
  const spread: Record<string, number> = {};
  if (clientIds.length === 0) return spread;
  for (const node of cluster.nodes) {
    const held = cluster.heldBy(node.name);
    spread[node.name] = clientIds.filter((id) => held.has(id)).length;
  }
  return spread;
}

/**
 * A run shared by the tests of one scenario: the first to ask starts it, the others (a `todo`
 * test of a known violation) read the same report instead of running the scenario again.
 */
export function once<T>(run: () => Promise<T>): () => Promise<T> {
  let result: Promise<T> | undefined;
  return () => {
    result ??= run();
    return result;
  };
}
