import { Redis } from "ioredis";
import { RedisServer } from "../../../harness/redis-server.js";
import type { CleanupRegistry } from "../lifecycle/cleanup-registry.js";
import type { WatchedProcess } from "../system/process-cpu.js";

/** Redis' log line when it closes a client whose pending output passed its limit (pub/sub: 32 MB). */
const OUTPUT_BUFFER_CUT = /closed (ASAP )?for overcoming of output buffer limits/;

export interface BenchRedis {
  url: string;
  process: WatchedProcess | undefined;
  /**
   * `INFO <section>` as text, over a connection of its own that sends nothing else, so that a
   * client library's commands never show in the figures read from it.
   */
  info(section: string): Promise<string>;
  /**
   * Clients Redis closed for passing their output-buffer limit since it started, from its log
   * (INFO has no counter for this before Redis 7.2).
   */
  outputBufferCuts(): number;
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
  return {
    url: server.url,
    process: pid ? { role: "redis", pid } : undefined,
    info: (section) => server.bulk("INFO", section),
    outputBufferCuts: () => server.countOutput(OUTPUT_BUFFER_CUT),
    stop,
  };
}
