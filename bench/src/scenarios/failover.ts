import { randomBytes } from "node:crypto";
import { HaProxy } from "../../../harness/haproxy.js";
import { startRedis } from "../brokers/redis.js";
import { type SluiceNodeHandle, startSluiceNode } from "../brokers/sluice.js";
import { FailoverPairs } from "../generator/failover-pairs.js";
import type { Scenario, ScenarioContext, ScenarioOutput, TableCell } from "./scenario.js";

const RATE_PER_PUBLISHER = 50;
const RECONNECT_PERIOD_MS = 100;
/** Redelivery after a failover takes a moment: loss is declared only after this quiet spell. */
const DELIVERY_GRACE_MS = 20_000;

interface Shape {
  pairs: number;
  /** Publishing time; the kill comes at a third of it. */
  streamMs: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? null;
}

/**
 * 3 Sluice nodes over Redis behind HAProxy; QoS 1 publisher/subscriber pairs with persistent
 * sessions stream through the load balancer; one node is SIGKILLed a third of the way in.
 */
async function failover(
  context: ScenarioContext,
  shape: Shape,
): Promise<Record<string, TableCell>> {
  const { cleanup, workDir, log } = context;
  const redis = await startRedis(cleanup);
  const keyPrefix = `bench-fo-${randomBytes(3).toString("hex")}:`;
  const nodes: SluiceNodeHandle[] = [];
  let pairs: FailoverPairs | undefined;
  let stopLb: (() => Promise<void>) | undefined;
  try {
    for (const id of ["fo-1", "fo-2", "fo-3"])
      nodes.push(
        await startSluiceNode({ cleanup, workDir }, `bench-${id}`, {
          redis: { url: redis.url, keyPrefix },
        }),
      );
    const lb = await HaProxy.start(
      nodes.map((n, i) => ({ name: `fo-${i + 1}`, mqttPort: n.mqttPort, httpPort: n.httpPort })),
    );
    stopLb = cleanup.add("haproxy", () => lb.stop());
    pairs = await FailoverPairs.connect({
      url: lb.url,
      pairs: shape.pairs,
      ratePerPublisher: RATE_PER_PUBLISHER,
      reconnectPeriodMs: RECONNECT_PERIOD_MS,
      runId: `fo${randomBytes(3).toString("hex")}`,
    });
    const survivors = nodes.slice(1);
    pairs.start();
    await sleep(shape.streamMs / 3);
    const victim = nodes[0];
    if (!victim) throw new Error("no node to kill");
    const killedAt = Date.now();
    pairs.markKill(killedAt);
    victim.kill();
    log("[failover] node fo-1 SIGKILLed");
    await sleep((shape.streamMs * 2) / 3);
    pairs.stopPublishing();
    const deadline = Date.now() + DELIVERY_GRACE_MS;
    while (pairs.missing() > 0 && Date.now() < deadline) await sleep(250);
    const report = pairs.report();
    const affected = report.filter((r) => r.dropped);
    const resume = report
      .flatMap((r) => (r.resumeMs === undefined ? [] : [r.resumeMs]))
      .sort((a, b) => a - b);
    const resumeAffected = affected
      .flatMap((r) => (r.resumeMs === undefined ? [] : [r.resumeMs]))
      .sort((a, b) => a - b);
    const crashed = await Promise.race([
      Promise.any(survivors.map((n) => n.exited.then(() => true))),
      sleep(0).then(() => false),
    ]);
    const lost = report.reduce((n, r) => n + r.lost, 0);
    const never = report.length - resume.length;
    return {
      pairs: shape.pairs,
      "pairs with a dropped client": affected.length,
      acknowledged: report.reduce((n, r) => n + r.acknowledged, 0),
      "lost (acknowledged)": lost,
      duplicates: report.reduce((n, r) => n + r.duplicates, 0),
      "resume p50 ms (all pairs)": percentile(resume, 50),
      "resume p99 ms (all pairs)": percentile(resume, 99),
      "resume p50 ms (dropped pairs)": percentile(resumeAffected, 50),
      "resume p99 ms (dropped pairs)": percentile(resumeAffected, 99),
      "survivor crashed": crashed,
      error:
        lost > 0
          ? `${lost} acknowledged messages lost`
          : never > 0
            ? `${never} pairs never resumed`
            : "",
    };
  } catch (error) {
    return { pairs: shape.pairs, error: (error as Error).message };
  } finally {
    pairs?.close();
    await stopLb?.();
    await Promise.allSettled(nodes.map((n) => n.stop()));
    await redis.stop();
  }
}

export const failoverScenario: Scenario = {
  name: "failover",
  description:
    "3 Sluice nodes behind HAProxy, QoS 1 pairs with persistent sessions; SIGKILL one node mid-stream: resume time, loss, duplicates",
  inDefaultSet: false,
  async run(context): Promise<ScenarioOutput> {
    const { quick, clients } = context.options;
    const shape: Shape = quick
      ? { pairs: clients ?? 3, streamMs: 4_500 }
      : { pairs: clients ?? 10, streamMs: 15_000 };
    const row = await failover(context, shape);
    return {
      rows: [],
      tables: [
        {
          title: `failover: ${shape.pairs} QoS 1 pairs through HAProxy, 3 Sluice nodes over Redis, one SIGKILLed`,
          columns: [
            "pairs",
            "pairs with a dropped client",
            "acknowledged",
            "lost (acknowledged)",
            "duplicates",
            "resume p50 ms (all pairs)",
            "resume p99 ms (all pairs)",
            "resume p50 ms (dropped pairs)",
            "resume p99 ms (dropped pairs)",
            "survivor crashed",
            "error",
          ],
          rows: [row],
          notes: [
            `each pair: a publisher at ${RATE_PER_PUBLISHER} msg/s (QoS 1) on its own topic and its subscriber (QoS 1), both clean: false, mqtt.js with reconnectPeriod ${RECONNECT_PERIOD_MS} ms, all through HAProxy (round robin, /readyz checked every 250 ms, down after 2 failures)`,
            `the first node is SIGKILLed after ${shape.streamMs / 3000} s of ${shape.streamMs / 1000} s of publishing`,
            "resume = from the kill to the subscriber's first message that was published after the kill (a pair untouched by the kill resumes within one publish interval)",
            `lost = PUBACKed messages never delivered, ${DELIVERY_GRACE_MS / 1000} s after publishing stopped; duplicates are allowed at QoS 1`,
          ],
        },
      ],
      config: {
        ...shape,
        ratePerPublisher: RATE_PER_PUBLISHER,
        reconnectPeriodMs: RECONNECT_PERIOD_MS,
      },
    };
  },
};
