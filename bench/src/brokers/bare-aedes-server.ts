/**
 * Bare aedes: the engine Sluice is built on, with none of Sluice's layers (no hooks, listeners,
 * metrics, packet guard), so that the difference to a Sluice node is the cost of those layers.
 * Run as its own process by bare-aedes.ts:
 *
 *   node bare-aedes-server.js --engine stock|patched [--redis redis://127.0.0.1:PORT] [--id ID]
 *     [--persistence-module PATH]
 *
 * `stock` is aedes 1.2.0 exactly as published (the `aedes-stock` alias, which patch-package
 * leaves alone); `patched` is the `aedes` folder with Sluice's patch applied. With --redis it
 * uses mqemitter-redis and aedes-persistence-redis, as an aedes cluster node would. Prints one
 * JSON line `{"event":"listening","port":N}` when it accepts clients. --persistence-module loads
 * the Redis persistence from another folder's entry point (an unpatched aedes-persistence-redis
 * unpacked by `npm pack`): patch-package patches the one in node_modules.
 */
import { createServer } from "node:net";
import { parseArgs } from "node:util";
import persistenceRedis from "aedes-persistence-redis";
import { Redis } from "ioredis";
import mqemitterRedis from "mqemitter-redis";

const { values } = parseArgs({
  options: {
    engine: { type: "string", default: "stock" },
    redis: { type: "string" },
    id: { type: "string" },
    "persistence-module": { type: "string" },
  },
});

interface Engine {
  createBroker(options: Record<string, unknown>): Promise<{
    handle: (stream: import("node:net").Socket) => unknown;
    close(callback: () => void): void;
  }>;
}

async function loadEngine(name: string | undefined): Promise<Engine> {
  if (name === "stock") return (await import("aedes-stock")).Aedes as unknown as Engine;
  if (name === "patched") return (await import("aedes")).Aedes as unknown as Engine;
  throw new Error(`--engine must be stock or patched, not ${name}`);
}

/**
 * Redis pub/sub and persistence on connections of our own, as Sluice builds them:
 * mqemitter-redis' default subscriber runs a ready check (INFO), which Redis refuses in
 * subscriber mode (ioredis issue 2037), and a bare broker that fails at random measures nothing.
 */
type PersistenceFactory = (options: { conn: Redis }) => unknown;

async function loadPersistence(path: string | undefined): Promise<PersistenceFactory> {
  if (!path) return persistenceRedis as unknown as PersistenceFactory;
  return ((await import(path)) as { default: PersistenceFactory }).default;
}

function redisOptions(url: string, persistence: PersistenceFactory): Record<string, unknown> {
  const { hostname, port } = new URL(url);
  const connect = (extra: { enableReadyCheck?: boolean } = {}): Redis =>
    new Redis({ host: hostname, port: Number(port), ...extra });
  return {
    mq: mqemitterRedis({ pubConn: connect(), subConn: connect({ enableReadyCheck: false }) }),
    persistence: persistence({ conn: connect() }),
  };
}

const Aedes = await loadEngine(values.engine);
const broker = await Aedes.createBroker({
  ...(values.id ? { id: values.id } : {}),
  ...(values.redis
    ? redisOptions(values.redis, await loadPersistence(values["persistence-module"]))
    : {}),
});
const server = createServer((socket) => broker.handle(socket));
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  process.stdout.write(`${JSON.stringify({ event: "listening", port })}\n`);
});

const shutdown = (): void => {
  server.close();
  broker.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2_000).unref();
};
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
