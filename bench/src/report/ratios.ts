import { ALL_BROKERS } from "../brokers/catalog.js";
import type { ResultRow } from "../scenarios/scenario.js";

/** The reference every figure is divided by: the C broker. */
export const REFERENCE_BROKER = "mosquitto";

function sameCase(a: ResultRow, b: ResultRow): boolean {
  return (
    a.scenario === b.scenario &&
    a.qos === b.qos &&
    a.payloadBytes === b.payloadBytes &&
    a.targetRate === b.targetRate &&
    a.protocolVersion === b.protocolVersion
  );
}

/** The row of another broker measured in the same case in this run. */
export function peerRow(
  rows: readonly ResultRow[],
  row: ResultRow,
  broker: string,
): ResultRow | undefined {
  return rows.find((r) => r.broker === broker && sameCase(r, row) && r.error === undefined);
}

/** The bare-aedes broker with the same storage and topology as this row's broker, if any. */
export function bareCounterpart(broker: string): string | undefined {
  return ALL_BROKERS.find((b) => b.name === broker)?.bareAedesCounterpart;
}

/**
 * `value(row) / value(reference row)` within one run, so machine noise that hits both cancels;
 * undefined where either figure is missing.
 */
export function ratio(
  rows: readonly ResultRow[],
  row: ResultRow,
  reference: string | undefined,
  value: (r: ResultRow) => number,
): number | undefined {
  if (reference === undefined || row.error !== undefined) return undefined;
  const peer = peerRow(rows, row, reference);
  if (!peer || value(peer) <= 0) return undefined;
  return value(row) / value(peer);
}
