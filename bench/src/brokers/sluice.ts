import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stringify } from "yaml";
import { SluiceProcess } from "../../../harness/sluice-process.js";
import type { CleanupRegistry } from "../lifecycle/cleanup-registry.js";
import type { WatchedProcess } from "../system/process-cpu.js";
import {
  type BrokerContext,
  type BrokerDefinition,
  type RunningBroker,
  runningNodes,
} from "./broker.js";
import { startRedis } from "./redis.js";

export interface SluiceNodeHandle {
  url: string;
  process: WatchedProcess | undefined;
  /** The TCP listener's port and the HTTP port (/readyz, for a load balancer's checks). */
  mqttPort: number;
  httpPort: number;
  /** Resolves when the process ends, however: the storm and failover scenarios watch it. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** A crash, not a shutdown: SIGKILL, as the failover scenarios inflict. */
  kill(): void;
  stop(): Promise<void>;
}

export interface SluiceNodeOptions {
  redis?: { url: string; keyPrefix: string };
  /** Another build's CLI (dist/src/cli.js), to measure it against this one in the same run. */
  cli?: string | undefined;
  /** Config keys that replace the defaults below (listeners, auth, acl, limits). */
  config?: Record<string, unknown>;
  /** Node flags and environment of the bench's own instruments (e.g. a loop-stall probe). */
  instruments?: { execArgv: string[]; env: NodeJS.ProcessEnv };
}

/**
 * A `sluice start --config FILE` process (the built CLI, dist/src/cli.js), as deployed: one TCP
 * listener on a free loopback port, anonymous clients allowed (the bench measures the message
 * path, authentication is the security-overhead scenario's), log level info (connection
 * open/close are debug), no drain on stop.
 */
export async function startSluiceNode(
  { cleanup, workDir, nodeCpu }: BrokerContext,
  nodeId: string,
  { redis, config: overrides, cli, instruments }: SluiceNodeOptions = {},
): Promise<SluiceNodeHandle> {
  const config = {
    nodeId,
    listeners: [{ type: "tcp", host: "127.0.0.1", port: 0 }],
    http: { host: "127.0.0.1", port: 0 },
    log: { level: "info", format: "json" },
    auth: { allowAnonymous: true },
    shutdown: { drainSeconds: 0 },
    ...(redis ? { redis } : {}),
    ...benchSluiceConfig(),
    ...overrides,
  };
  const file = join(workDir, `${nodeId}.yaml`);
  await writeFile(file, stringify(config));
  const node = SluiceProcess.spawn(
    ["start", "--config", file],
    { SLUICE_LOG_LEVEL: "info", ...instruments?.env },
    [...nodeExecArgv(), ...(instruments?.execArgv ?? [])],
    ...(cli === undefined ? [] : [cli]),
  );
  const pid = node.child.pid;
  const stop = cleanup.add(
    `sluice ${nodeId}`,
    async () => {
      node.kill("SIGTERM");
      const timer = setTimeout(() => node.kill("SIGKILL"), 5_000);
      await node.exited;
      clearTimeout(timer);
      if (pid) nodeCpu?.release(pid);
      await keepTrace(node, `${nodeId}-${pid}`);
    },
    () => (pid ? [pid] : []),
  );
  try {
    // before it takes any load: the whole life of the node runs under its quota
    if (nodeCpu && pid) nodeCpu.place(pid, nodeId);
    const { ports, httpPort } = await node.ready();
    const mqttPort = Number(ports.tcp ?? ports.tls);
    const scheme = ports.tcp === undefined ? "mqtts" : "mqtt";
    return {
      url: `${scheme}://127.0.0.1:${mqttPort}`,
      process: pid ? { role: "broker", pid } : undefined,
      mqttPort,
      httpPort,
      exited: node.exited,
      kill: () => node.kill("SIGKILL"),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** The young generation the image, the chart and the manifests give a node (docs/operations.md). */
const DEPLOYED_NODE_FLAGS = ["--max-semi-space-size=32"];

/**
 * Node's own flags for every Sluice node the bench starts: those a deployed node runs with,
 * then BENCH_SLUICE_EXEC_ARGV (space-separated, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof
 * --trace-gc"; a later flag wins): profiles of a scenario's broker as deployed. A node's stderr
 * (--trace-gc prints to stdout) is kept by its process handle.
 */
export function nodeExecArgv(): string[] {
  const flags = process.env.BENCH_SLUICE_EXEC_ARGV?.trim();
  return [...DEPLOYED_NODE_FLAGS, ...(flags ? flags.split(/\s+/) : [])];
}

/**
 * Config keys for every Sluice node the bench starts, from BENCH_SLUICE_CONFIG (a JSON object,
 * top-level keys replacing the bench's, e.g. '{"limits":{"queue":{"maxInflight":1000}}}'): a
 * setting measured against the defaults in another run. A scenario's own keys still win.
 */
export function benchSluiceConfig(): Record<string, unknown> {
  const text = process.env.BENCH_SLUICE_CONFIG?.trim();
  if (!text) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new Error(`BENCH_SLUICE_CONFIG is not JSON: ${(error as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw new Error("BENCH_SLUICE_CONFIG must be a JSON object of config keys");
  return parsed as Record<string, unknown>;
}

/**
 * With BENCH_SLUICE_EXEC_ARGV and BENCH_SLUICE_TRACE_DIR set: what a node printed that is not
 * a log line (--trace-gc's lines) goes to DIR/<node>-<pid>.stdout when it stops.
 */
async function keepTrace(node: SluiceProcess, name: string): Promise<void> {
  const dir = process.env.BENCH_SLUICE_TRACE_DIR;
  if (!dir || nodeExecArgv().length === 0) return;
  const text = node.lines
    .filter((line) => line.level === undefined)
    .map((line) => line.msg)
    .join("\n");
  await writeFile(join(dir, `${name}.stdout`), `${text}\n`);
}

function single(
  name: string,
  withRedis: boolean,
  description: string,
  counterpart: string,
  cli?: () => string,
): BrokerDefinition {
  return {
    name,
    description,
    bareAedesCounterpart: counterpart,
    async start(context: BrokerContext): Promise<RunningBroker> {
      return cluster(context, name, 1, withRedis, cli?.());
    },
  };
}

/** The other build a `*-baseline` broker runs: SLUICE_BASELINE_CLI, its dist/src/cli.js. */
export function baselineCli(): string {
  const cli = process.env.SLUICE_BASELINE_CLI;
  if (!cli)
    throw new Error(
      "the *-baseline brokers run another build: set SLUICE_BASELINE_CLI=/path/to/build/dist/src/cli.js",
    );
  return cli;
}

async function cluster(
  context: BrokerContext,
  name: string,
  nodes: number,
  withRedis: boolean,
  cli?: string,
): Promise<RunningBroker> {
  const cleanup: CleanupRegistry = context.cleanup;
  const redis = withRedis ? await startRedis(cleanup) : undefined;
  const keyPrefix = `bench-${randomBytes(3).toString("hex")}:`;
  const started: SluiceNodeHandle[] = [];
  try {
    for (let i = 0; i < nodes; i++)
      started.push(
        await startSluiceNode(context, `bench-${name}-${i}`, {
          ...(redis ? { redis: { url: redis.url, keyPrefix } } : {}),
          cli,
        }),
      );
  } catch (error) {
    await Promise.allSettled(started.map((n) => n.stop()));
    await redis?.stop();
    throw error;
  }
  return runningNodes(name, started, redis);
}

export const sluice = single("sluice", false, "one Sluice node, in memory", "aedes");
export const sluiceRedis = single(
  "sluice-redis",
  true,
  "one Sluice node with Redis (pub/sub and persistence)",
  "aedes-redis",
);
/** The same setups from another build (SLUICE_BASELINE_CLI): before and after in one run. */
export const sluiceBaseline = single(
  "sluice-baseline",
  false,
  "one Sluice node of another build (SLUICE_BASELINE_CLI), in memory",
  "aedes",
  baselineCli,
);
export const sluiceRedisBaseline = single(
  "sluice-redis-baseline",
  true,
  "one Sluice node of another build (SLUICE_BASELINE_CLI) with Redis",
  "aedes-redis",
  baselineCli,
);
export const sluiceCluster2: BrokerDefinition = {
  name: "sluice-cluster-2",
  description: "two Sluice nodes over one Redis; publishers on one, subscribers on the other",
  bareAedesCounterpart: "aedes-cluster-2",
  start: (context) => cluster(context, "sluice-cluster-2", 2, true),
};
export const sluiceCluster2Baseline: BrokerDefinition = {
  name: "sluice-cluster-2-baseline",
  description:
    "two Sluice nodes of another build (SLUICE_BASELINE_CLI) over one Redis; publishers on one, subscribers on the other",
  bareAedesCounterpart: "aedes-cluster-2",
  start: (context) => cluster(context, "sluice-cluster-2-baseline", 2, true, baselineCli()),
};
