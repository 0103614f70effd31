import type { BrokerDefinition, RunningBroker } from "../brokers/broker.js";
import { findBroker } from "../brokers/catalog.js";
import { ConnectionPool, splitGroups } from "../generator/connection-pool.js";
import { rssBytes } from "../system/process-memory.js";
import { CONNECT_COST_COLUMNS, ConnectCostWindow, connectCostCells } from "./connect-cost.js";
import { cappedConnections, generatorProcessesFor } from "./connection-limits.js";
import { unplacedNodes } from "./measure-brokers.js";
import type { Scenario, ScenarioContext, ScenarioOutput, TableCell } from "./scenario.js";

const DEFAULT_CONNECTIONS = 10_000;
const QUICK_CONNECTIONS = 500;
/** CONNECTs awaiting CONNACK per generator process: under Node's listen backlog of 511. */
const WINDOW = 100;
/** Time for the broker's allocations to settle before and after, for a stable RSS. */
const SETTLE_MS = 1_000;
const OPEN_TIMEOUT_MS = 120_000;
const BROKERS = ["mosquitto", "aedes", "sluice", "sluice-redis"];

/** What the per-connect columns measure. */
export const CONNECT_COST_NOTE =
  "per connect: from just before the first CONNECT to the last CONNACK, divided by the connections accepted: CPU µs of the node(s) and of redis-server (every thread, schedstat), read syscalls of each and the node(s)' write syscalls (/proc/<pid>/io), Redis commands (INFO commandstats, the bench's INFO left out) and bytes in/out (INFO stats)";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function brokerPid(broker: RunningBroker): number | undefined {
  return broker.processes.find((p) => p.role === "broker")?.pid;
}

/** Starts the broker, opens `count` idle clients as fast as it takes them, stops it again. */
export async function measureConnections(
  context: ScenarioContext,
  definition: BrokerDefinition,
  count: number,
): Promise<Record<string, TableCell>> {
  const broker = await definition.start({
    cleanup: context.cleanup,
    workDir: context.workDir,
    ...(context.nodeCpu ? { nodeCpu: context.nodeCpu } : {}),
  });
  const processes = generatorProcessesFor(count);
  let pool: ConnectionPool | undefined;
  try {
    unplacedNodes(context, broker);
    const pid = brokerPid(broker);
    const url = broker.publisherUrls[0];
    if (!pid || !url) throw new Error("broker without a process or a URL");
    await sleep(SETTLE_MS);
    const before = rssBytes(pid);
    pool = ConnectionPool.start(context.cleanup, splitGroups(url, count, processes, "idle-"));
    const window = await ConnectCostWindow.begin(broker);
    const opened = await pool.open(WINDOW, OPEN_TIMEOUT_MS);
    const cost = await window.end();
    await sleep(SETTLE_MS);
    const after = rssBytes(pid);
    const errors = opened.refusedServerUnavailable + opened.refusedOther + opened.failed;
    context.log(
      `${definition.name}: ${opened.accepted}/${count} connected in ${opened.elapsedMs} ms, ${errors} errors`,
    );
    return {
      broker: definition.name,
      connections: opened.accepted,
      "connects/s": Math.round(opened.accepted / (opened.elapsedMs / 1000)),
      "time (s)": opened.elapsedMs / 1000,
      "RSS before (MiB)": before === undefined ? null : before / 2 ** 20,
      "RSS after (MiB)": after === undefined ? null : after / 2 ** 20,
      "bytes per idle connection":
        before === undefined || after === undefined || opened.accepted === 0
          ? null
          : Math.round((after - before) / opened.accepted),
      "CONNACK 3": opened.refusedServerUnavailable,
      "other errors": opened.refusedOther + opened.failed,
      "generator processes": processes,
      ...connectCostCells(cost, opened.accepted),
      error: opened.accepted < count ? `${count - opened.accepted} not connected` : "",
    };
  } catch (error) {
    return { broker: definition.name, error: (error as Error).message };
  } finally {
    await pool?.close();
    await broker.stop();
  }
}

export const connections: Scenario = {
  name: "connections",
  description:
    "connect N idle clients (CONNECT/CONNACK) as fast as the broker takes them: connects/s and broker RSS per idle connection",
  inDefaultSet: false,
  async run(context): Promise<ScenarioOutput> {
    const { options } = context;
    const requested = options.clients ?? (options.quick ? QUICK_CONNECTIONS : DEFAULT_CONNECTIONS);
    const { count, note } = cappedConnections(requested);
    const brokers =
      options.brokers.length > 0 ? options.brokers : BROKERS.map((name) => findBroker(name));
    const rows: Array<Record<string, TableCell>> = [];
    for (const broker of brokers) rows.push(await measureConnections(context, broker, count));
    return {
      rows: [],
      tables: [
        {
          title: `connections: ${count.toLocaleString("en-US")} idle clients`,
          columns: [
            "broker",
            "connections",
            "connects/s",
            "time (s)",
            "RSS before (MiB)",
            "RSS after (MiB)",
            "bytes per idle connection",
            "CONNACK 3",
            "other errors",
            "generator processes",
            ...CONNECT_COST_COLUMNS,
            "error",
          ],
          rows,
          notes: [
            note,
            `raw-socket clients (clean session, keep-alive 0), ${WINDOW} CONNECTs awaiting CONNACK per generator process`,
            "RSS is the broker process's (Redis not included), read 1 s after the last CONNACK; a garbage-collected broker's figure moves with its heap's growth policy",
            CONNECT_COST_NOTE,
            "Sluice: limits.connections.perNode 100,000 (default), ratePerIp unset; CONNACK 3 is its overload guard (limits.overload.eventLoopDelayMs 2,000) and counts as an error",
          ],
        },
      ],
      config: {
        requested,
        connections: count,
        window: WINDOW,
        brokers: brokers.map((b) => b.name),
      },
    };
  },
};
