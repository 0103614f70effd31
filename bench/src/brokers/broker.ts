import type { NodeCpuBudget } from "../../../harness/cpu-cgroup.js";
import type { CleanupRegistry } from "../lifecycle/cleanup-registry.js";
import type { WatchedProcess } from "../system/process-cpu.js";
import type { BenchRedis } from "./redis.js";

/** A broker set up for a measurement: where clients connect and which processes serve them. */
export interface RunningBroker {
  name: string;
  /** Where publishers connect (dealt round robin). */
  publisherUrls: string[];
  /** Where subscribers connect: another node than the publishers' in a cluster. */
  subscriberUrls: string[];
  /**
   * Broker nodes (role "broker", publishers' node first, subscribers' last) and Redis (role
   * "redis"), for CPU accounting.
   */
  processes: WatchedProcess[];
  /** Each Sluice node's HTTP port (/readyz, /metrics), in the order of `processes`. */
  httpPorts?: number[];
  /** The Redis the nodes share, if any: its INFO and its log. */
  redis?: BenchRedis;
  stop(): Promise<void>;
}

export interface BrokerContext {
  cleanup: CleanupRegistry;
  /** A scratch folder for config files, removed by the caller. */
  workDir: string;
  /** `--node-cpu`: each broker node process goes into a cgroup of its own right after spawn. */
  nodeCpu?: NodeCpuBudget;
}

/** One kind of broker a scenario can measure. New kinds register in catalog.ts. */
export interface BrokerDefinition {
  /** The name in results: mosquitto, aedes, sluice, sluice-redis, sluice-cluster-2, ... */
  name: string;
  description: string;
  /**
   * The bare-aedes broker with the same storage and topology: the "x bare aedes" ratio of a
   * Sluice row divides by this one's figure.
   */
  bareAedesCounterpart?: string;
  start(context: BrokerContext): Promise<RunningBroker>;
}

/** A started broker process (or Redis), as runningNodes needs it. */
export interface StartedProcess {
  url?: string;
  process: WatchedProcess | undefined;
  /** A Sluice node's HTTP port. */
  httpPort?: number;
  stop(): Promise<void>;
}

/**
 * The RunningBroker of one or more started nodes (and their Redis, if any): publishers on the
 * first node, subscribers on the last, so a cluster's messages cross between nodes.
 */
export function runningNodes(
  name: string,
  started: ReadonlyArray<StartedProcess & { url: string }>,
  redis: BenchRedis | undefined,
): RunningBroker {
  const first = started[0];
  const last = started[started.length - 1];
  if (!first || !last) throw new Error(`no ${name} node started`);
  return {
    name,
    publisherUrls: [first.url],
    subscriberUrls: [last.url],
    processes: [
      ...started.flatMap((n) => (n.process ? [n.process] : [])),
      ...(redis?.process ? [redis.process] : []),
    ],
    httpPorts: started.flatMap((n) => (n.httpPort === undefined ? [] : [n.httpPort])),
    ...(redis ? { redis } : {}),
    async stop() {
      await Promise.allSettled(started.map((n) => n.stop()));
      await redis?.stop();
    },
  };
}
