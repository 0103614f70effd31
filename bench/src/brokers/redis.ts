import { Redis } from "ioredis";
import { RedisServer } from "../../../harness/redis-server.js";
import type { CleanupRegistry } from "../lifecycle/cleanup-registry.js";
import type { WatchedProcess } from "../system/process-cpu.js";

export interface BenchRedis {
  url: string;
  process: WatchedProcess | undefined;
  stop(): Promise<void>;
}

/** A throwaway redis-server on a random port (the test helper), with its pid for CPU figures. */
export async function startRedis(cleanup: CleanupRegistry): Promise<BenchRedis> {
  const server = await RedisServer.start();
  let pid: number | undefined;
  const connection = new Redis({ port: server.port, host: "127.0.0.1", lazyConnect: true });
  try {
    await connection.connect();
    const info = await connection.info("server");
    pid = Number(/process_id:(\d+)/.exec(info)?.[1]) || undefined;
  } finally {
    connection.disconnect();
  }
  const stop = cleanup.add(
    "redis",
    () => server.kill(),
    () => (pid ? [pid] : []),
  );
  return { url: server.url, process: pid ? { role: "redis", pid } : undefined, stop };
}
