import { fullMatrix, lbCut, redisCut, redisLatency } from "../../../harness/chaos-matrix.js";
import { type ChaosReport, type ChaosScenario, runChaos } from "../../../harness/chaos-scenario.js";
import { tally } from "../../../harness/history.js";
import type { Scenario, ScenarioOutput, TableCell } from "./scenario.js";

const seconds = (ms: number | undefined): number | null =>
  ms === undefined ? null : Math.round(ms / 100) / 10;

/** The shared-subscription properties, in columns of their own. */
const SHARED = ["shared-stranded", "shared-one-member", "shared-qos2-once"];

/** Shared members in every scenario of the bench (the tests pick their own). */
const SHARED_MEMBERS = 4;

/** One row of the report: issue 17's figures for one scenario. */
function row(report: ChaosReport): Record<string, TableCell> {
  const { summary, violations, extra } = report;
  const byProperty = tally(violations);
  const count = (property: string) => byProperty[property]?.count ?? 0;
  const others = Object.entries(byProperty)
    .filter(([p]) => !["no-loss", "order", "no-qos2-duplicates", ...SHARED].includes(p))
    .map(([p, v]) => `${p} ${v.count}: ${v.first}`);
  return {
    scenario: report.name,
    "fault s": seconds(report.faultMs),
    "fenced after s": seconds(report.fencedAfterMs),
    "ready after heal s": seconds(report.readyAgainMs),
    "recovered after heal s": seconds(report.recoveredAfterMs),
    sent: summary.sent,
    acknowledged: summary.acked,
    "lost (acknowledged)": summary.lostAcknowledged,
    "duplicates (QoS 1 and 2)": summary.duplicates,
    "QoS 2 duplicates": count("no-qos2-duplicates"),
    "out of order": count("order"),
    "QoS 0 lost": summary.qos0Lost,
    "shared members per node": Object.entries(report.sharedSpread)
      .map(([node, n]) => `${node}:${n}`)
      .join(" "),
    "shared deliveries": summary.shared.delivered,
    "shared redeliveries": summary.shared.redelivered,
    "shared same-member duplicates": summary.shared.sameMemberDuplicates,
    "shared stranded": summary.shared.stranded,
    "shared QoS 0 lost": summary.shared.qos0Lost,
    "shared violations": SHARED.map((p) => byProperty[p])
      .flatMap((v, i) => (v ? [`${SHARED[i]} ${v.count}: ${v.first}`] : []))
      .join("; "),
    "other violations": others.join("; "),
    extra: Object.entries(extra)
      .map(([k, v]) => `${k}=${v}`)
      .join(" "),
  };
}

/**
 * Issue 17's chaos matrix: every fault of the chaos tests plus the long ones (a 60 s cut of a
 * node from Redis), each on a fresh two-node cluster behind HAProxy with the chaos workload,
 * reported per scenario. Needs root (network namespaces, nftables).
 */
export const chaosScenario: Scenario = {
  name: "chaos",
  description:
    "Network faults under QoS 0/1/2 load (issue 17): node-Redis cuts 200 ms/5 s/60 s (and one way), +50/+500 ms, 5 % loss, node-LB cut, one client id on both sides, Sentinel failover, Redis restart without data; time until fenced/recovered, losses, duplicates",
  inDefaultSet: false,
  async run(context): Promise<ScenarioOutput> {
    const { quick } = context.options;
    const matrix: ChaosScenario[] = (
      quick ? [redisCut(200), redisLatency(50, 2_000), lbCut(2_000)] : fullMatrix()
    ).map((scenario) => ({
      ...scenario,
      workload: { ...scenario.workload, sharedMembers: SHARED_MEMBERS },
    }));
    const rows: Array<Record<string, TableCell>> = [];
    for (const scenario of matrix) {
      context.log(`chaos: ${scenario.name}`);
      try {
        rows.push(row(await runChaos(scenario)));
      } catch (error) {
        rows.push({ scenario: scenario.name, error: (error as Error).message });
      }
      const last = rows.at(-1);
      context.log(`chaos: ${scenario.name} done: ${JSON.stringify(last)}`);
    }
    const columns = [...new Set([...Object.keys(row(emptyReport())), "error"])];
    return {
      rows: [],
      tables: [
        {
          title: "chaos: network faults under load, two Sluice nodes behind HAProxy",
          columns,
          rows,
          notes: [
            `workload through HAProxy: a QoS 0 publisher, two QoS 1 and two QoS 2 publishers (one message per 20 ms each), two QoS 2 subscribers, ${SHARED_MEMBERS} members of one shared group at QoS 2 (one's connection dropped 100 ms into the fault), four will holders (one killed 100 ms into the fault, its will due once; not in redis-restart-empty), a retained publisher; all persistent sessions, mqtt.js reconnecting every 250 ms`,
            "shared: deliveries to members; redeliveries: extra copies at other members of messages whose member lost its connection after they were published (at least once, allowed); same-member duplicates: QoS 1 copies a member already had; stranded: acknowledged QoS 1/2 messages no member got, plus entries still in members' queues or the backlog in Redis once the run settled (read until none, up to 5 s); violations: shared-stranded, shared-one-member (two members got it and no member's connection was lost), shared-qos2-once",
            "nodes and Redis in network namespaces; cuts and loss are nftables rules, latency a delay relay (no sch_netem in this kernel); -lease3s runs use nodeLeaseSeconds 3 and heartbeatMs 250 (fence after 2 s), the others the defaults (fence after 10 s)",
            "fenced after: from the fault to redis.fenced; ready after heal: from the heal to redis.unfenced; recovered after heal: until every acknowledged QoS 1/2 message had reached every subscriber",
            "lost (acknowledged): acknowledged QoS 1/2 messages a subscriber never got (for redis-restart-empty: counted from the subscribers' resubscription on, what Redis held before is lost by definition)",
            "out of order and QoS 2 duplicates come from the resume race (a session resuming on another node gets live messages before its stored queue): see docs/clustering.md",
          ],
        },
      ],
      config: { scenarios: matrix.map((s) => s.name), quick },
    };
  },
};

function emptyReport(): ChaosReport {
  return {
    name: "",
    fencedAfterMs: undefined,
    readyAgainMs: undefined,
    recoveredAfterMs: undefined,
    faultMs: 0,
    violations: [],
    summary: {
      sent: 0,
      acked: 0,
      delivered: 0,
      duplicates: 0,
      qos0Lost: 0,
      lostAcknowledged: 0,
      shared: { delivered: 0, redelivered: 0, sameMemberDuplicates: 0, stranded: 0, qos0Lost: 0 },
    },
    extra: {},
    sharedSpread: {},
  };
}
