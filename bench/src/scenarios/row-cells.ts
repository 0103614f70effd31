import { type CostFigures, cpuMicrosPerMessage } from "./cost-probe.js";
import type { ResultRow, TableCell } from "./scenario.js";

/** Figures as the tables show them: to 0.1, and to 0.001 for ratios well below one. */
export const round1 = (value: number): number => Math.round(value * 10) / 10;
export const round3 = (value: number): number => Math.round(value * 1000) / 1000;

/** The row of a case no round of which measured anything: the first round's error says why. */
export function unmeasuredRow(
  base: Record<string, TableCell>,
  rounds: ReadonlyArray<{ row: ResultRow }>,
): Record<string, TableCell> {
  const error = rounds.map((r) => r.row.error).find((e) => e !== undefined);
  return { ...base, error: error ?? "no round measured" };
}

/** What a load row counted at the clients: published and delivered, p99, lost. */
export function deliveryCells(row: ResultRow): Record<string, TableCell> {
  return {
    published: row.published,
    "published msg/s": Math.round(row.publishedPerSecond),
    "delivered msg/s": Math.round(row.messagesPerSecond),
    "p99 ms": row.p99Ms,
    lost: row.lost,
  };
}

/** CPU µs per delivered message of the processes named `prefix`..., to 0.1 µs; null unmeasured. */
export function microsCell(row: ResultRow, figures: CostFigures, prefix: string): number | null {
  const value = cpuMicrosPerMessage(row, figures, prefix);
  return value === null ? null : round1(value);
}
