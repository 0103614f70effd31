import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { stringify } from "yaml";
import { SluiceProcess } from "../../../test/helpers/sluice-process.js";
import type { CleanupRegistry } from "../lifecycle/cleanup-registry.js";
import type { WatchedProcess } from "../system/process-cpu.js";
import type { BrokerContext, BrokerDefinition, RunningBroker } from "./broker.js";
import { startRedis } from "./redis.js";

interface SluiceNodeHandle {
  url: string;
  process: WatchedProcess | undefined;
  stop(): Promise<void>;
}

/**
 * A `sluice start --config FILE` process (the built CLI, dist/src/cli.js), as deployed: one TCP
 * listener on a free loopback port, anonymous clients allowed (the bench measures the message
 * path, authentication is the security-overhead scenario's), log level info (connection
 * open/close are debug), no drain on stop.
 */
async function startNode(
  { cleanup, workDir }: BrokerContext,
  nodeId: string,
  redis?: { url: string; keyPrefix: string },
): Promise<SluiceNodeHandle> {
  const config = {
    nodeId,
    listeners: [{ type: "tcp", host: "127.0.0.1", port: 0 }],
    http: { host: "127.0.0.1", port: 0 },
    log: { level: "info", format: "json" },
    auth: { allowAnonymous: true },
    shutdown: { drainSeconds: 0 },
    ...(redis ? { redis } : {}),
  };
  const file = join(workDir, `${nodeId}.yaml`);
  await writeFile(file, stringify(config));
  const node = SluiceProcess.spawn(["start", "--config", file], { SLUICE_LOG_LEVEL: "info" });
  const pid = node.child.pid;
  const stop = cleanup.add(
    `sluice ${nodeId}`,
    async () => {
      node.kill("SIGTERM");
      const timer = setTimeout(() => node.kill("SIGKILL"), 5_000);
      await node.exited;
      clearTimeout(timer);
    },
    () => (pid ? [pid] : []),
  );
  try {
    const { ports } = await node.ready();
    return {
      url: `mqtt://127.0.0.1:${ports.tcp}`,
      process: pid ? { role: "broker", pid } : undefined,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

function single(
  name: string,
  withRedis: boolean,
  description: string,
  counterpart: string,
): BrokerDefinition {
  return {
    name,
    description,
    bareAedesCounterpart: counterpart,
    async start(context: BrokerContext): Promise<RunningBroker> {
      return cluster(context, name, 1, withRedis);
    },
  };
}

async function cluster(
  context: BrokerContext,
  name: string,
  nodes: number,
  withRedis: boolean,
): Promise<RunningBroker> {
  const cleanup: CleanupRegistry = context.cleanup;
  const redis = withRedis ? await startRedis(cleanup) : undefined;
  const keyPrefix = `bench-${randomBytes(3).toString("hex")}:`;
  const started: SluiceNodeHandle[] = [];
  try {
    for (let i = 0; i < nodes; i++)
      started.push(
        await startNode(
          context,
          `bench-${name}-${i}`,
          redis ? { url: redis.url, keyPrefix } : undefined,
        ),
      );
  } catch (error) {
    await Promise.allSettled(started.map((n) => n.stop()));
    await redis?.stop();
    throw error;
  }
  const first = started[0];
  const last = started[started.length - 1];
  if (!first || !last) throw new Error("no sluice node started");
  return {
    name,
    publisherUrls: [first.url],
    subscriberUrls: [last.url],
    processes: [
      ...started.flatMap((n) => (n.process ? [n.process] : [])),
      ...(redis?.process ? [redis.process] : []),
    ],
    async stop() {
      await Promise.allSettled(started.map((n) => n.stop()));
      await redis?.stop();
    },
  };
}

export const sluice = single("sluice", false, "one Sluice node, in memory", "aedes");
export const sluiceRedis = single(
  "sluice-redis",
  true,
  "one Sluice node with Redis (pub/sub and persistence)",
  "aedes-redis",
);
export const sluiceCluster2: BrokerDefinition = {
  name: "sluice-cluster-2",
  description: "two Sluice nodes over one Redis; publishers on one, subscribers on the other",
  bareAedesCounterpart: "aedes-cluster-2",
  start: (context) => cluster(context, "sluice-cluster-2", 2, true),
};
