import type { BenchRedis } from "./redis.js";

/** What Redis has done so far, from INFO: commands by name and network bytes. */
export interface RedisCounters {
  /** `calls` of INFO commandstats by command (`publish`, `evalsha`, `client|setname`, ...). */
  calls: Record<string, number>;
  netInputBytes: number;
  netOutputBytes: number;
}

/** Commands of the bench's own probes, left out of the figures. */
const PROBE_COMMANDS = new Set(["info"]);

/** `calls` by command from INFO commandstats text. */
export function parseCommandStats(text: string): Record<string, number> {
  const calls: Record<string, number> = {};
  for (const match of text.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    const [, name = "", count = "0"] = match;
    calls[name] = Number(count);
  }
  return calls;
}

/** A numeric field of INFO text (`name:value` lines); NaN when absent. */
export function infoField(text: string, name: string): number {
  const match = new RegExp(`^${name}:(\\d+)`, "m").exec(text);
  return match ? Number(match[1]) : Number.NaN;
}

/**
 * Reads the counters: commandstats first, stats last, so that between two readings the only
 * probe reply in the output bytes is the earlier reading's stats reply, which `since` removes.
 */
export async function readRedisCounters(
  redis: BenchRedis,
): Promise<{ counters: RedisCounters; statsReplyBytes: number }> {
  const commandStats = await redis.info("commandstats");
  const stats = await redis.info("stats");
  return {
    counters: {
      calls: parseCommandStats(commandStats),
      netInputBytes: infoField(stats, "total_net_input_bytes"),
      netOutputBytes: infoField(stats, "total_net_output_bytes"),
    },
    // as written on the wire: a RESP bulk string, `$<length>\r\n<body>\r\n`
    statsReplyBytes: Buffer.byteLength(stats) + `$${Buffer.byteLength(stats)}\r\n\r\n`.length,
  };
}

export interface RedisActivity {
  /** Commands Redis ran between the readings, the probe's own left out. */
  commands: number;
  byCommand: Record<string, number>;
  netInputBytes: number;
  netOutputBytes: number;
}

/** What Redis did between two readings of readRedisCounters. */
export function redisActivitySince(
  before: { counters: RedisCounters; statsReplyBytes: number },
  after: RedisCounters,
): RedisActivity {
  const byCommand: Record<string, number> = {};
  for (const [name, calls] of Object.entries(after.calls)) {
    const grown = calls - (before.counters.calls[name] ?? 0);
    if (grown > 0 && !PROBE_COMMANDS.has(name)) byCommand[name] = grown;
  }
  return {
    commands: Object.values(byCommand).reduce((n, c) => n + c, 0),
    byCommand,
    netInputBytes: after.netInputBytes - before.counters.netInputBytes,
    netOutputBytes: after.netOutputBytes - before.counters.netOutputBytes - before.statsReplyBytes,
  };
}
