import { randomBytes } from "node:crypto";
import { startRedis } from "../brokers/redis.js";
import { type SluiceNodeHandle, startSluiceNode } from "../brokers/sluice.js";
import { ConnectionPool, splitGroups } from "../generator/connection-pool.js";
import { PeakRss, rssBytes } from "../system/process-memory.js";
import { cappedConnections, generatorProcessesFor } from "./connection-limits.js";
import type { Scenario, ScenarioContext, ScenarioOutput, TableCell } from "./scenario.js";

const DEFAULT_CLIENTS = 10_000;
const QUICK_CLIENTS = 300;
const WINDOW = 100;
/**
 * A refused or failed client waits about this long before trying again (with jitter), as
 * mqtt.js's default reconnectPeriod; the first attempt after the drop is immediate.
 */
const RETRY_MS = 1_000;
const RESTORE_TIMEOUT_MS = 90_000;
const MiB = 2 ** 20;

/**
 * Reconnection storm: a 2-node cluster over Redis holds N idle clients, half on each node;
 * one node is SIGKILLed and its clients reconnect straight to the survivor (same client ids,
 * clean sessions). Measures the time until all are connected again, refusals, and whether the
 * survivor lived through it and how much memory it took.
 */
async function storm(
  context: ScenarioContext,
  clients: number,
): Promise<Record<string, TableCell>> {
  const { cleanup, workDir, log } = context;
  const redis = await startRedis(cleanup);
  const keyPrefix = `bench-storm-${randomBytes(3).toString("hex")}:`;
  const nodes: SluiceNodeHandle[] = [];
  let pool: ConnectionPool | undefined;
  let peak: PeakRss | undefined;
  try {
    for (const id of ["storm-a", "storm-b"])
      nodes.push(
        await startSluiceNode({ cleanup, workDir }, id, { redis: { url: redis.url, keyPrefix } }),
      );
    const [survivor, victim] = nodes;
    const survivorPid = survivor?.process?.pid;
    if (!survivor || !victim || !survivorPid) throw new Error("cluster did not start");
    let survivorExit: string | undefined;
    void survivor.exited.then(({ code, signal }) => {
      survivorExit = `exited (code ${code}, signal ${signal})`;
    });
    const half = Math.ceil(clients / 2);
    const perNode = generatorProcessesFor(half);
    pool = ConnectionPool.start(cleanup, [
      ...splitGroups(survivor.url, clients - half, perNode, "storm-a-"),
      ...splitGroups(victim.url, half, perNode, "storm-b-"),
    ]);
    const opened = await pool.open(WINDOW, RESTORE_TIMEOUT_MS);
    log(`storm: ${opened.accepted}/${clients} connected in ${opened.elapsedMs} ms`);
    if (opened.accepted < clients)
      throw new Error(`only ${opened.accepted} of ${clients} clients connected before the kill`);
    const rssBefore = rssBytes(survivorPid);
    peak = new PeakRss(survivorPid);
    pool.failOver(victim.url, survivor.url, RETRY_MS);
    const killedAt = Date.now();
    victim.kill();
    const progress = setInterval(() => {
      const p = pool?.progress();
      if (p) log(`storm: ${p.reconnected}/${half} reconnected`);
    }, 2_000);
    const restored = await pool
      .restored(half, RESTORE_TIMEOUT_MS)
      .finally(() => clearInterval(progress));
    const peakRss = peak.stop();
    const errors = restored.refusedServerUnavailable + restored.refusedOther + restored.failed;
    return {
      clients,
      "on the killed node": half,
      dropped: restored.dropped,
      "all back (s)":
        restored.restoredAt === undefined ? null : (restored.restoredAt - killedAt) / 1000,
      "reconnects/s":
        restored.restoredAt === undefined
          ? null
          : Math.round(half / ((restored.restoredAt - killedAt) / 1000)),
      "CONNACK 3": restored.refusedServerUnavailable,
      "other errors": restored.refusedOther + restored.failed,
      "errors total": errors,
      "survivor crashed": survivorExit !== undefined,
      "survivor RSS before (MiB)": rssBefore === undefined ? null : rssBefore / MiB,
      "survivor peak RSS (MiB)": peakRss / MiB,
      error:
        survivorExit !== undefined
          ? `survivor ${survivorExit}`
          : restored.restoredAt === undefined
            ? `${restored.dropped} dropped, not all back within ${RESTORE_TIMEOUT_MS / 1000} s`
            : "",
    };
  } catch (error) {
    return { clients, error: (error as Error).message };
  } finally {
    peak?.stop();
    await pool?.close();
    await Promise.allSettled(nodes.map((n) => n.stop()));
    await redis.stop();
  }
}

export const stormScenario: Scenario = {
  name: "storm",
  description:
    "2 Sluice nodes over Redis with N idle clients; SIGKILL one; time until its clients are all connected to the survivor",
  inDefaultSet: false,
  async run(context): Promise<ScenarioOutput> {
    const requested =
      context.options.clients ?? (context.options.quick ? QUICK_CLIENTS : DEFAULT_CLIENTS);
    // The survivor ends up holding every client.
    const { count, note } = cappedConnections(requested);
    const row = await storm(context, count);
    return {
      rows: [],
      tables: [
        {
          title: `storm: ${count.toLocaleString("en-US")} clients, 2 Sluice nodes over Redis, one SIGKILLed`,
          columns: [
            "clients",
            "on the killed node",
            "dropped",
            "all back (s)",
            "reconnects/s",
            "CONNACK 3",
            "other errors",
            "survivor crashed",
            "survivor RSS before (MiB)",
            "survivor peak RSS (MiB)",
            "error",
          ],
          rows: [row],
          notes: [
            note,
            "the killed node's clients reconnect directly to the survivor (not through HAProxy: the test helper's maxconn 8,000 is below 10,000 clients), same client ids, clean sessions, keep-alive 0",
            `first reconnect at once on the drop; after a refusal or failure, again after ${RETRY_MS} ms +-50% (mqtt.js's default reconnectPeriod)`,
            "all back = from the SIGKILL to the last dropped client's CONNACK 0; CONNACK 3 (the overload guard) and failed attempts are errors; peak RSS sampled every 100 ms",
          ],
        },
      ],
      config: { requested, clients: count, window: WINDOW, retryMs: RETRY_MS },
    };
  },
};
