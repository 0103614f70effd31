import { protocolName } from "../generator/protocol-level.js";
import type { ResultRow } from "../scenarios/scenario.js";
import { bareCounterpart, REFERENCE_BROKER, ratio } from "./ratios.js";

const integer = (n: number): string => Math.round(n).toLocaleString("en-US");
const ms = (n: number): string => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
const times = (n: number | undefined): string => (n === undefined ? "" : `${n.toFixed(2)}x`);
const size = (bytes: number): string => (bytes >= 1024 ? `${bytes / 1024} KiB` : `${bytes} B`);

function generatorCpu(row: ResultRow): string {
  const list = (values: number[]): string => values.map((v) => v.toFixed(0)).join("+") || "?";
  const text = `${list(row.generatorCpu.publishers)} / ${list(row.generatorCpu.subscribers)}`;
  return row.generatorCpu.saturated ? `**${text}** (saturated)` : text;
}

function brokerCpu(row: ResultRow): string {
  const broker = row.brokerCpuPercent === null ? "?" : row.brokerCpuPercent.toFixed(0);
  return row.redisCpuPercent === null
    ? broker
    : `${broker} (+ Redis ${row.redisCpuPercent.toFixed(0)})`;
}

function crossCheck(row: ResultRow, tool: string): string {
  const check = row.crossChecks.find((c) => c.tool === tool);
  if (!check) return "";
  if (check.error && check.messagesPerSecond === 0) return "failed";
  return integer(check.messagesPerSecond);
}

/** Rows of a scenario that sets the protocol level (mqtt5) get a column for it. */
function leadCells(rows: readonly ResultRow[]): {
  header: string[];
  cells: (row: ResultRow) => string[];
} {
  const withProtocol = rows.some((r) => r.protocolVersion !== undefined);
  return {
    header: ["broker", "QoS", "payload", ...(withProtocol ? ["MQTT"] : [])],
    cells: (row) => [
      row.broker,
      String(row.qos),
      size(row.payloadBytes),
      ...(withProtocol ? [protocolName(row.protocolVersion ?? 4)] : []),
    ],
  };
}

/** A Markdown table; the first `textColumns` columns left-aligned, figures right-aligned. */
function table(header: string[], lines: string[][], textColumns: number): string {
  return [
    `| ${header.join(" | ")} |`,
    `| ${header.map((_, i) => (i < textColumns ? "---" : "---:")).join(" | ")} |`,
    ...lines.map((cells) => `| ${cells.join(" | ")} |`),
  ].join("\n");
}

/**
 * The table of a full-speed scenario: delivered msg/s with its ratios to Mosquitto and to the
 * bare aedes with the same storage, latency under that load, losses, and the CPU of the
 * generator (per process, percent of one core) next to every figure.
 */
export function throughputTable(rows: readonly ResultRow[]): string {
  const tools = [...new Set(rows.flatMap((r) => r.crossChecks.map((c) => c.tool)))];
  const lead = leadCells(rows);
  const header = [
    ...lead.header,
    "msg/s",
    `x ${REFERENCE_BROKER}`,
    "x bare aedes",
    "p50 ms",
    "p99 ms",
    "lost",
    "dup",
    "generator CPU % (pub / sub)",
    "broker CPU %",
    ...tools.map((t) => `${t} msg/s`),
  ];
  const lines = rows.map((row) => {
    if (row.error !== undefined)
      return [
        ...lead.cells(row),
        `failed: ${row.error}`,
        ...header.slice(lead.header.length + 1).map(() => ""),
      ];
    const mps = (r: ResultRow): number => r.messagesPerSecond;
    return [
      ...lead.cells(row),
      integer(row.messagesPerSecond),
      row.broker === REFERENCE_BROKER ? "1.00x" : times(ratio(rows, row, REFERENCE_BROKER, mps)),
      times(ratio(rows, row, bareCounterpart(row.broker), mps)),
      ms(row.p50Ms),
      ms(row.p99Ms),
      integer(row.lost),
      integer(row.duplicates),
      generatorCpu(row),
      brokerCpu(row),
      ...tools.map((t) => crossCheck(row, t)),
    ];
  });
  return table(header, lines, lead.header.length);
}

/** The table of a fixed-rate scenario: latency percentiles, with p99 relative to Mosquitto's. */
export function latencyTable(rows: readonly ResultRow[]): string {
  const lead = leadCells(rows);
  const header = [
    ...lead.header,
    "rate msg/s",
    "delivered msg/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    `p99 x ${REFERENCE_BROKER}`,
    "lost",
    "dup",
    "generator CPU % (pub / sub)",
    "broker CPU %",
  ];
  const lines = rows.map((row) => {
    if (row.error !== undefined)
      return [
        ...lead.cells(row),
        `failed: ${row.error}`,
        ...header.slice(lead.header.length + 1).map(() => ""),
      ];
    return [
      ...lead.cells(row),
      integer(row.targetRate ?? 0),
      integer(row.messagesPerSecond),
      ms(row.p50Ms),
      ms(row.p99Ms),
      ms(row.p999Ms),
      row.broker === REFERENCE_BROKER
        ? "1.00x"
        : times(ratio(rows, row, REFERENCE_BROKER, (r) => r.p99Ms)),
      integer(row.lost),
      integer(row.duplicates),
      generatorCpu(row),
      brokerCpu(row),
    ];
  });
  return table(header, lines, lead.header.length);
}

/** Full-speed rows get the throughput table, fixed-rate rows the latency table. */
export function resultTable(rows: readonly ResultRow[]): string {
  const fixedRate = rows.filter((r) => r.targetRate !== null);
  const fullSpeed = rows.filter((r) => r.targetRate === null);
  return [
    fullSpeed.length > 0 ? throughputTable(fullSpeed) : "",
    fixedRate.length > 0 ? latencyTable(fixedRate) : "",
  ]
    .filter((t) => t !== "")
    .join("\n\n");
}
