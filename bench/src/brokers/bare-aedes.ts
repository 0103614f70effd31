import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { NodeCpuBudget } from "../../../harness/cpu-cgroup.js";
import type { CleanupRegistry } from "../lifecycle/cleanup-registry.js";
import type { WatchedProcess } from "../system/process-cpu.js";
import {
  type BrokerContext,
  type BrokerDefinition,
  type RunningBroker,
  runningNodes,
} from "./broker.js";
import { startRedis } from "./redis.js";

const SERVER = fileURLToPath(new URL("./bare-aedes-server.js", import.meta.url));
const START_TIMEOUT_MS = 15_000;

type Engine = "stock" | "patched";

interface BareNode {
  url: string;
  process: WatchedProcess | undefined;
  stop(): Promise<void>;
}

/** Starts one bare-aedes-server process and waits for its "listening" line. */
export async function startNode(
  cleanup: CleanupRegistry,
  engine: Engine,
  options: {
    redisUrl?: string;
    id?: string;
    persistenceModule?: string;
    execArgv?: string[];
    nodeCpu?: NodeCpuBudget | undefined;
  } = {},
): Promise<BareNode> {
  const args = [...(options.execArgv ?? []), SERVER, "--engine", engine];
  if (options.redisUrl) args.push("--redis", options.redisUrl);
  if (options.id) args.push("--id", options.id);
  if (options.persistenceModule) args.push("--persistence-module", options.persistenceModule);
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  const { nodeCpu } = options;
  const pid = child.pid;
  const stopChild = cleanup.addChild(`aedes (${engine})`, child);
  const stop = async (): Promise<void> => {
    await stopChild();
    if (pid) nodeCpu?.release(pid);
  };
  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  try {
    // before it takes any load: the whole life of the node runs under its quota
    if (nodeCpu && pid) nodeCpu.place(pid, options.id ?? `aedes-${engine}`);
    const port = await new Promise<number>((resolve, reject) => {
      let stdout = "";
      const timer = setTimeout(
        () => reject(new Error("bare aedes did not start")),
        START_TIMEOUT_MS,
      );
      child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
        stdout += chunk;
        const match = /"port":(\d+)/.exec(stdout);
        if (match) {
          clearTimeout(timer);
          resolve(Number(match[1]));
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`bare aedes exited (${code}): ${stderr.slice(-500)}`));
      });
    });
    return {
      url: `mqtt://127.0.0.1:${port}`,
      process: child.pid ? { role: "broker", pid: child.pid } : undefined,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

function inMemory(
  name: string,
  engine: Engine,
  description: string,
  bareAedesCounterpart?: string,
): BrokerDefinition {
  return {
    name,
    description,
    ...(bareAedesCounterpart ? { bareAedesCounterpart } : {}),
    async start({ cleanup, nodeCpu }: BrokerContext): Promise<RunningBroker> {
      const node = await startNode(cleanup, engine, { nodeCpu });
      return {
        name,
        publisherUrls: [node.url],
        subscriberUrls: [node.url],
        processes: node.process ? [node.process] : [],
        stop: node.stop,
      };
    },
  };
}

/** `nodes` stock aedes processes sharing one Redis; publishers on the first, subscribers on the last. */
function overRedis(name: string, nodes: number, description: string): BrokerDefinition {
  return {
    name,
    description,
    async start({ cleanup, nodeCpu }: BrokerContext): Promise<RunningBroker> {
      const redis = await startRedis(cleanup);
      const started: BareNode[] = [];
      try {
        for (let i = 0; i < nodes; i++)
          started.push(
            await startNode(cleanup, "stock", {
              redisUrl: redis.url,
              id: `bench-aedes-${i}`,
              nodeCpu,
            }),
          );
      } catch (error) {
        await Promise.allSettled([...started.map((n) => n.stop()), redis.stop()]);
        throw error;
      }
      return runningNodes(name, started, redis);
    },
  };
}

export const bareAedes = inMemory(
  "aedes",
  "stock",
  "bare aedes 2.0.0-beta.1 as published, in memory, no Sluice layers",
);
export const bareAedesPatched = inMemory(
  "aedes-patched",
  "patched",
  "bare aedes with Sluice's patch (patches/aedes+2.0.0-beta.1.patch), in memory, no Sluice layers",
  // its ratio to stock aedes is the cost of the patch alone
  "aedes",
);
export const bareAedesRedis = overRedis(
  "aedes-redis",
  1,
  "bare stock aedes with mqemitter-redis and aedes-persistence-redis",
);
export const bareAedesCluster2 = overRedis(
  "aedes-cluster-2",
  2,
  "two bare stock aedes nodes over one Redis; publishers on one, subscribers on the other",
);
