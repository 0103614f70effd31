import type { RunningBroker } from "../brokers/broker.js";
import {
  type RedisActivity,
  type RedisCounters,
  readRedisCounters,
  redisActivitySince,
} from "../brokers/redis-info.js";
import { threadCpuSeconds } from "../system/process-cpu.js";
import { readSyscalls, syscalls } from "../system/process-io.js";
import { round1, round3 } from "./row-cells.js";
import type { TableCell } from "./scenario.js";

/** What a burst of CONNECTs cost the broker's processes, from the first CONNECT to the last CONNACK. */
export interface ConnectCost {
  /** CPU seconds of the broker's node processes, added up; null if unreadable. */
  nodeCpuSeconds: number | null;
  /** Read syscalls of the node processes (clients' sockets and Redis replies); null if unreadable. */
  nodeReadSyscalls: number | null;
  /** Write syscalls of the node processes (CONNACKs, commands to Redis); null if unreadable. */
  nodeWriteSyscalls: number | null;
  /** CPU seconds of redis-server; null without Redis. */
  redisCpuSeconds: number | null;
  /** Redis' commands and bytes (INFO) and read syscalls; null without Redis. */
  redis: (RedisActivity & { readSyscalls: number | null }) | null;
}

interface Reading {
  nodeCpu: Array<number | undefined>;
  nodeSyscalls: Array<{ reads: number; writes: number } | undefined>;
  redisCpu: number | undefined;
  redisReads: number | undefined;
  redis: { counters: RedisCounters; statsReplyBytes: number } | undefined;
}

const sum = (values: ReadonlyArray<number | undefined>): number | null =>
  values.some((v) => v === undefined) ? null : values.reduce<number>((n, v) => n + (v ?? 0), 0);

const sumOf = (
  counts: ReadonlyArray<{ reads: number; writes: number } | undefined>,
  which: "reads" | "writes",
): number | null => sum(counts.map((c) => c?.[which]));

const delta = (before: number | null | undefined, after: number | null | undefined) =>
  before === null || before === undefined || after === null || after === undefined
    ? null
    : after - before;

/**
 * Process CPU (every thread, from schedstat), read syscalls (/proc/<pid>/io) and Redis' INFO
 * counters, read before the CONNECTs go out and after the last CONNACK: the cost of a connect
 * to each process, which on a shared machine says more than connects/s.
 */
export class ConnectCostWindow {
  private constructor(
    private readonly broker: RunningBroker,
    private readonly startReading: Reading,
  ) {}

  static async begin(broker: RunningBroker): Promise<ConnectCostWindow> {
    return new ConnectCostWindow(broker, await read(broker));
  }

  async end(): Promise<ConnectCost> {
    const end = await read(this.broker);
    const start = this.startReading;
    return {
      nodeCpuSeconds: delta(sum(start.nodeCpu), sum(end.nodeCpu)),
      nodeReadSyscalls: delta(sumOf(start.nodeSyscalls, "reads"), sumOf(end.nodeSyscalls, "reads")),
      nodeWriteSyscalls: delta(
        sumOf(start.nodeSyscalls, "writes"),
        sumOf(end.nodeSyscalls, "writes"),
      ),
      redisCpuSeconds: delta(start.redisCpu, end.redisCpu),
      redis:
        start.redis && end.redis
          ? {
              ...redisActivitySince(start.redis, end.redis.counters),
              readSyscalls: delta(start.redisReads, end.redisReads),
            }
          : null,
    };
  }
}

/** CPU and syscalls first (their moment matters), Redis' INFO a round trip later. */
async function read(broker: RunningBroker): Promise<Reading> {
  const nodes = broker.processes.filter((p) => p.role === "broker");
  const redisPid = broker.processes.find((p) => p.role === "redis")?.pid;
  const reading = {
    nodeCpu: nodes.map((p) => threadCpuSeconds(p.pid)),
    nodeSyscalls: nodes.map((p) => syscalls(p.pid)),
    redisCpu: redisPid === undefined ? undefined : threadCpuSeconds(redisPid),
    redisReads: redisPid === undefined ? undefined : readSyscalls(redisPid),
  };
  return { ...reading, redis: broker.redis ? await readRedisCounters(broker.redis) : undefined };
}

/** A connect's share of a figure; null when unmeasured or nothing connected. */
function perConnect(value: number | null | undefined, connects: number): number | null {
  return value === null || value === undefined || connects <= 0 ? null : value / connects;
}

/** The table columns of connectCostCells, in order. */
export const CONNECT_COST_COLUMNS = [
  "node µs/connect",
  "node reads/connect",
  "node writes/connect",
  "Redis µs/connect",
  "Redis cmds/connect",
  "Redis reads/connect",
  "Redis B in/connect",
  "Redis B out/connect",
  "Redis cmds/connect by name",
] as const;

/** A row's per-connect cells: CPU µs, syscalls, Redis commands (the four most) and bytes. */
export function connectCostCells(
  cost: ConnectCost | undefined,
  connects: number,
): Record<(typeof CONNECT_COST_COLUMNS)[number], TableCell> {
  const micros = (seconds: number | null | undefined) => {
    const value = perConnect(seconds, connects);
    return value === null ? null : round1(value * 1e6);
  };
  const ratio = (value: number | null | undefined, digits: (n: number) => number) => {
    const result = perConnect(value, connects);
    return result === null ? null : digits(result);
  };
  const redis = cost?.redis;
  return {
    "node µs/connect": micros(cost?.nodeCpuSeconds),
    "node reads/connect": ratio(cost?.nodeReadSyscalls, round3),
    "node writes/connect": ratio(cost?.nodeWriteSyscalls, round3),
    "Redis µs/connect": micros(cost?.redisCpuSeconds),
    "Redis cmds/connect": ratio(redis?.commands, round3),
    "Redis reads/connect": ratio(redis?.readSyscalls, round3),
    "Redis B in/connect": ratio(redis?.netInputBytes, round1),
    "Redis B out/connect": ratio(redis?.netOutputBytes, round1),
    "Redis cmds/connect by name": redis
      ? Object.entries(redis.byCommand)
          .sort((a, b) => b[1] - a[1])
          .slice(0, 4)
          .map(([name, calls]) => `${name} ${round3(calls / Math.max(connects, 1))}`)
          .join(", ")
      : null,
  };
}
