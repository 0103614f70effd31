/**
 * Bare aedes: the engine Sluice is built on, with none of Sluice's layers (no hooks, listeners,
 * metrics, packet guard), so that the difference to a Sluice node is the cost of those layers.
 * Run as its own process by bare-aedes.ts:
 *
 *   node bare-aedes-server.js --engine stock|patched [--redis redis://127.0.0.1:PORT] [--id ID]
 *     [--persistence-module PATH]
 *
 * `stock` is aedes 2.0.0-beta.1 exactly as published (the `aedes-stock` alias, which patch-package
 * leaves alone); `patched` is the `aedes` folder with Sluice's patch applied. With --redis it
 * uses mqemitter-redis and a Redis persistence, as an aedes cluster node would: stock aedes the
 * published aedes-persistence-redis 11.2.2 (the `aedes-persistence-redis-legacy` alias), patched
 * aedes Sluice's own (src/engine/redis-persistence.ts). Prints one JSON line
 * `{"event":"listening","port":N}` when it accepts clients. --persistence-module loads the Redis
 * persistence from another folder's entry point instead.
 */
import { createServer } from "node:net";
import { parseArgs } from "node:util";
import persistenceRedis from "aedes-persistence-redis-legacy";
import { Redis } from "ioredis";
import mqemitterRedis from "mqemitter-redis";
import { pino } from "pino";
import { RedisPersistence } from "../../../src/engine/redis-persistence.js";

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

async function loadPersistence(
  path: string | undefined,
  engine: string | undefined,
): Promise<PersistenceFactory> {
  if (!path && engine === "patched") {
    return ({ conn }) =>
      new RedisPersistence({
        db: conn,
        log: pino({ level: "silent" }),
        maxQueuedPerClient: 1_000_000,
        onQueueFull: () => {},
      });
  }
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
    ? redisOptions(values.redis, await loadPersistence(values["persistence-module"], values.engine))
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
