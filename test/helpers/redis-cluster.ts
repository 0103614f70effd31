import { type ChildProcess, execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "./free-port.js";

const run = promisify(execFile);

/**
 * A real Redis Cluster for a test: three primaries on random loopback ports (data and cluster
 * bus ports both chosen free, never the standard ones), slots assigned with
 * `redis-cli --cluster create`, without persistence. Resolves once every node reports
 * `cluster_state:ok`.
 */
export class RedisCluster {
  private constructor(
    readonly ports: number[],
    private readonly processes: ChildProcess[],
    private readonly dir: string,
  ) {}

  /** The seed nodes, as Sluice's `redis.cluster` takes them. */
  get nodes(): Array<{ host: string; port: number }> {
    return this.ports.map((port) => ({ host: "127.0.0.1", port }));
  }

  static async start(primaries = 3): Promise<RedisCluster> {
    const dir = await mkdtemp(join(tmpdir(), "sluice-redis-cluster-"));
    const ports: number[] = [];
    const processes: ChildProcess[] = [];
    const cluster = new RedisCluster(ports, processes, dir);
    try {
      for (let i = 0; i < primaries; i++) {
        const port = await freePort();
        const busPort = await freePort();
        ports.push(port);
        processes.push(await startNode(dir, port, busPort));
      }
      await run("redis-cli", [
        "--cluster",
        "create",
        ...ports.map((port) => `127.0.0.1:${port}`),
        "--cluster-replicas",
        "0",
        "--cluster-yes",
      ]);
      for (const port of ports) await waitForClusterOk(port);
      return cluster;
    } catch (error) {
      await cluster.stop();
      throw error;
    }
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.processes.map(async (child) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = once(child, "exit");
        child.kill("SIGKILL");
        await exited;
      }),
    );
    await rm(this.dir, { recursive: true, force: true });
  }
}

async function startNode(dir: string, port: number, busPort: number): Promise<ChildProcess> {
  const child = spawn(
    "redis-server",
    [
      "--port",
      String(port),
      "--cluster-port",
      String(busPort),
      "--bind",
      "127.0.0.1",
      "--cluster-enabled",
      "yes",
      "--cluster-config-file",
      join(dir, `nodes-${port}.conf`),
      "--cluster-node-timeout",
      "2000",
      "--save",
      "",
      "--appendonly",
      "no",
      "--dir",
      dir,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  await new Promise<void>((resolve, reject) => {
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      output += chunk;
      if (output.includes("Ready to accept connections")) resolve();
    });
    child.once("error", reject);
    child.once("exit", (code) =>
      reject(new Error(`redis-server exited (${code}): ${output.slice(-500)}`)),
    );
  });
  return child;
}

/** Slot assignment spreads over the cluster bus: each node says when it sees the whole cluster. */
async function waitForClusterOk(port: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const { stdout } = await run("redis-cli", ["-p", String(port), "cluster", "info"]);
    if (stdout.includes("cluster_state:ok")) return;
    if (Date.now() > deadline) throw new Error(`redis cluster node ${port} not ok: ${stdout}`);
    // No event to wait on here: the bus gossip converges within a few of its 100 ms ticks.
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
