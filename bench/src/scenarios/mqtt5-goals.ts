import type { ResultRow, TableCell } from "./scenario.js";

/**
 * Issue 15's bench goals: MQTT 5 clients deliver at least 0.9x what 3.1.1 clients do at full
 * speed, and their p99 at the fixed rate is at most 1.2x 3.1.1's, on the same broker.
 */
export const MQTT5_GOALS = { throughput: 0.9, p99: 1.2 } as const;

export const GOAL_COLUMNS = [
  "broker",
  "measure",
  "MQTT 3.1.1",
  "MQTT 5",
  "v5 / v3.1.1",
  "goal",
  "met",
  "per round",
  "broker µs/msg (3.1.1 / 5)",
  "lost (3.1.1 / 5)",
  "generator saturated",
];

const round2 = (value: number): number => Number(value.toFixed(2));
const integer = (n: number): string => Math.round(n).toLocaleString("en-US");

/**
 * Broker CPU per delivered message (all its processes, µs): on a loaded machine a steadier
 * figure than the rate or the tail, which other work's scheduling moves.
 */
function cpuPerMessage(row: ResultRow, messagesPerSecond = row.messagesPerSecond): string {
  if (row.brokerCpuPercent === null || messagesPerSecond <= 0) return "?";
  const micros = (row.brokerCpuPercent * 10_000) / messagesPerSecond;
  return micros >= 100 ? integer(micros) : micros.toFixed(1);
}

/**
 * The fixed-rate levels run in the same window (mqtt5.ts): each row's broker CPU is the
 * broker's over both levels' messages, shown once.
 */
function cpuColumn({ v3, v5 }: Pair): string {
  if (v3.targetRate === null) return `${cpuPerMessage(v3)} / ${cpuPerMessage(v5)}`;
  return `${cpuPerMessage(v3, v3.messagesPerSecond + v5.messagesPerSecond)} (both)`;
}

/** The lower middle of an even count, as the bench's median round. */
function medianOf(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] as number;
}

/** The 3.1.1 and MQTT 5 rows of one broker's case. */
interface Pair {
  v3: ResultRow;
  v5: ResultRow;
}

/** Rows of the same broker and case at the two levels, in the order the 3.1.1 rows come. */
function pairs(rows: readonly ResultRow[]): Pair[] {
  const found: Pair[] = [];
  for (const v3 of rows) {
    if (v3.protocolVersion !== 4) continue;
    const v5 = rows.find(
      (r) =>
        r.protocolVersion === 5 &&
        r.broker === v3.broker &&
        r.qos === v3.qos &&
        r.payloadBytes === v3.payloadBytes &&
        r.targetRate === v3.targetRate,
    );
    if (v5) found.push({ v3, v5 });
  }
  return found;
}

/**
 * A goal row per broker and case measured at both levels: the median of its rounds' ratios, judged
 * against the goal (not judged for reference brokers, which show what MQTT 5 costs elsewhere),
 * and each round's ratio of the two measurements taken back to back.
 */
export function protocolGoalRows(
  rows: readonly ResultRow[],
  referenceBrokers: ReadonlySet<string>,
): Array<Record<string, TableCell>> {
  return pairs(rows).map(({ v3, v5 }) => {
    const fullSpeed = v3.targetRate === null;
    const figure = (r: { messagesPerSecond: number; p99Ms: number }): number =>
      fullSpeed ? r.messagesPerSecond : r.p99Ms;
    const shown = (r: ResultRow): TableCell =>
      r.error !== undefined
        ? `failed: ${r.error}`
        : fullSpeed
          ? `${integer(r.messagesPerSecond)} msg/s`
          : `${r.p99Ms.toFixed(2)} ms`;
    const goal = fullSpeed ? MQTT5_GOALS.throughput : MQTT5_GOALS.p99;
    const reference = referenceBrokers.has(v3.broker);
    const roundRatios = (v3.rounds ?? []).map((r3, i) => {
      const r5 = v5.rounds?.[i];
      if (!r5 || r3.error !== undefined || r5.error !== undefined || figure(r3) <= 0) return null;
      return figure(r5) / figure(r3);
    });
    const perRound = roundRatios.map((r) => (r === null ? "?" : r.toFixed(2)));
    // Each round measures both levels together (fixed rate: one window) or back to back (full
    // speed): the median of the rounds' ratios, so that what the machine did to a round hits
    // both sides of its ratio, not a ratio of two medians taken from different rounds.
    const measured = roundRatios.filter((r): r is number => r !== null);
    const ratio =
      v3.error !== undefined || v5.error !== undefined
        ? null
        : measured.length > 0
          ? medianOf(measured)
          : figure(v3) > 0
            ? figure(v5) / figure(v3)
            : null;
    return {
      broker: v3.broker,
      measure: fullSpeed
        ? `throughput, QoS ${v3.qos}`
        : `p99 at ${integer((v3.targetRate ?? 0) + (v5.targetRate ?? 0))} msg/s, QoS ${v3.qos}`,
      "MQTT 3.1.1": shown(v3),
      "MQTT 5": shown(v5),
      "v5 / v3.1.1": ratio === null ? null : round2(ratio),
      goal: reference ? "(reference)" : `${fullSpeed ? "≥" : "≤"} ${goal}x`,
      met: reference || ratio === null ? null : fullSpeed ? ratio >= goal : ratio <= goal,
      "per round": perRound.join(" / "),
      "broker µs/msg (3.1.1 / 5)": cpuColumn({ v3, v5 }),
      "lost (3.1.1 / 5)": `${v3.lost} / ${v5.lost}`,
      "generator saturated": v3.generatorCpu.saturated || v5.generatorCpu.saturated,
    };
  });
}
