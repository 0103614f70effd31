/**
 * Heap per idle connection (issue 5: no higher than bare aedes): a broker in this process, N
 * idle clean-session connections from generator processes (keep-alive 0, no subscriptions),
 * and the V8 heap (after a full GC) and RSS before and after, per connection. With
 * --snapshot DIR it writes a heap snapshot before and after, to attribute the difference
 * (which constructors, closures, arrays grew by N).
 *
 *   npm run build && node --expose-gc dist/bench/idle-memory.js --broker sluice|aedes|aedes-stock
 *     [--connections N] [--snapshot DIR]
 *
 * One broker per run: a process that ran another keeps its heap shape.
 */
import { createServer, type Server } from "node:net";
import { parseArgs } from "node:util";
import { writeHeapSnapshot } from "node:v8";
import { startNode } from "../harness/in-process-node.js";
import { ConnectionPool, splitGroups } from "./src/generator/connection-pool.js";
import { CleanupRegistry } from "./src/lifecycle/cleanup-registry.js";

const { values } = parseArgs({
  options: {
    broker: { type: "string", default: "sluice" },
    connections: { type: "string", default: "2000" },
    snapshot: { type: "string" },
  },
});
const COUNT = Number(values.connections);

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with node --expose-gc");

async function settle(): Promise<{ heap: number; rss: number; external: number }> {
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  for (let i = 0; i < 3; i++) gc?.();
  const usage = process.memoryUsage();
  return { heap: usage.heapUsed, rss: usage.rss, external: usage.external };
}

interface Engine {
  createBroker(options: Record<string, unknown>): Promise<{
    handle: (stream: import("node:net").Socket) => unknown;
    close(callback: () => void): void;
  }>;
}

async function startBareAedes(module: string): Promise<{ url: string; stop(): Promise<void> }> {
  const { Aedes } = (await import(module)) as { Aedes: Engine };
  const broker = await Aedes.createBroker({});
  const server: Server = createServer((socket) => broker.handle(socket));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    url: `mqtt://127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close();
        broker.close(() => resolve());
      }),
  };
}

async function startBroker(name: string): Promise<{ url: string; stop(): Promise<void> }> {
  if (name === "aedes") return startBareAedes("aedes");
  if (name === "aedes-stock") return startBareAedes("aedes-stock");
  if (name !== "sluice") throw new Error(`--broker must be sluice, aedes or aedes-stock`);
  const node = await startNode({});
  return { url: node.urls.tcp as string, stop: () => node.stop() };
}

const cleanup = new CleanupRegistry();
const broker = await startBroker(values.broker);
try {
  const before = await settle();
  if (values.snapshot) writeHeapSnapshot(`${values.snapshot}/${values.broker}-before.heapsnapshot`);
  const pool = ConnectionPool.start(cleanup, splitGroups(broker.url, COUNT, 1, "idle-"));
  const opened = await pool.open(100, 120_000);
  const after = await settle();
  if (values.snapshot) writeHeapSnapshot(`${values.snapshot}/${values.broker}-after.heapsnapshot`);
  const per = (a: number, b: number) => ((b - a) / opened.accepted / 1024).toFixed(2);
  console.log(
    `${values.broker.padEnd(12)} ${opened.accepted} idle connections: heap ${per(before.heap, after.heap)} KB, ` +
      `external ${per(before.external, after.external)} KB, RSS ${per(before.rss, after.rss)} KB per connection`,
  );
  await pool.close();
} finally {
  await cleanup.stopAll();
  await broker.stop();
}
