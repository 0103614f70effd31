import { protocolName } from "../generator/protocol-level.js";
import type { ResultRow } from "../scenarios/scenario.js";

export interface ChartSeries {
  label: string;
  color: string;
  /** One value per category; undefined leaves a gap. */
  values: Array<number | undefined>;
}

export interface ChartPanel {
  title: string;
  /** Formats an axis or bar value. */
  format: (value: number) => string;
  categories: string[];
  series: ChartSeries[];
}

const WIDTH = 960;
const LABEL_WIDTH = 150;
const VALUE_WIDTH = 80;
const BAR_HEIGHT = 11;
const BAR_GAP = 2;
const CATEGORY_GAP = 10;
const PANEL_TITLE = 28;
const LEGEND = 22;
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

const escapeXml = (text: string): string =>
  text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** Horizontal grouped bars, one group per category (broker), one bar per series; no dependencies. */
function renderPanel(panel: ChartPanel, top: number): { svg: string; height: number } {
  const plotWidth = WIDTH - LABEL_WIDTH - VALUE_WIDTH - 20;
  const max = Math.max(
    1e-9,
    ...panel.series.flatMap((s) => s.values.filter((v): v is number => v !== undefined)),
  );
  const groupHeight = panel.series.length * (BAR_HEIGHT + BAR_GAP) + CATEGORY_GAP;
  const parts: string[] = [
    `<text x="10" y="${top + 18}" font-size="15" font-weight="bold">${escapeXml(panel.title)}</text>`,
  ];
  let x = LABEL_WIDTH;
  for (const series of panel.series) {
    parts.push(
      `<rect x="${x}" y="${top + PANEL_TITLE}" width="12" height="12" fill="${series.color}"/>`,
      `<text x="${x + 16}" y="${top + PANEL_TITLE + 10}" font-size="12">${escapeXml(series.label)}</text>`,
    );
    x += 22 + series.label.length * 7;
  }
  let y = top + PANEL_TITLE + LEGEND;
  panel.categories.forEach((category, c) => {
    parts.push(
      `<text x="${LABEL_WIDTH - 8}" y="${y + groupHeight / 2 - CATEGORY_GAP / 2 + 4}" font-size="12" text-anchor="end">${escapeXml(category)}</text>`,
    );
    panel.series.forEach((series, s) => {
      const value = series.values[c];
      const barY = y + s * (BAR_HEIGHT + BAR_GAP);
      if (value === undefined) return;
      const width = Math.max(1, (value / max) * plotWidth);
      parts.push(
        `<rect x="${LABEL_WIDTH}" y="${barY}" width="${width.toFixed(1)}" height="${BAR_HEIGHT}" fill="${series.color}"><title>${escapeXml(`${category}, ${series.label}: ${panel.format(value)}`)}</title></rect>`,
        `<text x="${(LABEL_WIDTH + width + 4).toFixed(1)}" y="${barY + BAR_HEIGHT - 2}" font-size="10">${escapeXml(panel.format(value))}</text>`,
      );
    });
    y += groupHeight;
  });
  parts.push(
    `<line x1="${LABEL_WIDTH}" y1="${top + PANEL_TITLE + LEGEND - 4}" x2="${LABEL_WIDTH}" y2="${y}" stroke="#888"/>`,
  );
  return { svg: parts.join("\n"), height: y - top + 10 };
}

export function renderChart(
  title: string,
  subtitle: string,
  panels: readonly ChartPanel[],
): string {
  const rendered: string[] = [];
  let top = 50;
  for (const panel of panels) {
    const { svg, height } = renderPanel(panel, top);
    rendered.push(svg);
    top += height + 10;
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${top}" viewBox="0 0 ${WIDTH} ${top}" font-family="Helvetica, Arial, sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="22" font-size="17" font-weight="bold">${escapeXml(title)}</text>
<text x="10" y="40" font-size="12" fill="#555">${escapeXml(subtitle)}</text>
${rendered.join("\n")}
</svg>
`;
}

const integer = (n: number): string => Math.round(n).toLocaleString("en-US");
const millis = (n: number): string => `${n.toFixed(n >= 10 ? 1 : 2)} ms`;
const size = (bytes: number): string => (bytes >= 1024 ? `${bytes / 1024} KiB` : `${bytes} B`);

/** A bar's case: QoS and payload, and the protocol where the scenario set it (mqtt5). */
function caseLabel(row: ResultRow): string {
  const protocol =
    row.protocolVersion === undefined ? "" : `, MQTT ${protocolName(row.protocolVersion)}`;
  return `QoS ${row.qos}, ${size(row.payloadBytes)}${protocol}`;
}

/**
 * The panels for a run's rows: delivered msg/s at full speed (a bar per QoS and payload) and
 * p99 latency at the fixed rate (a bar per QoS), one group per broker in measurement order.
 */
export function panelsFor(rows: readonly ResultRow[]): ChartPanel[] {
  const panels: ChartPanel[] = [];
  const brokersOf = (subset: readonly ResultRow[]): string[] => [
    ...new Set(subset.map((r) => r.broker)),
  ];
  const build = (
    subset: readonly ResultRow[],
    title: string,
    format: (v: number) => string,
    value: (r: ResultRow) => number,
    label: (r: ResultRow) => string,
  ): ChartPanel => {
    const categories = brokersOf(subset);
    const labels = [...new Set(subset.map(label))];
    return {
      title,
      format,
      categories,
      series: labels.map((name, i) => ({
        label: name,
        color: COLORS[i % COLORS.length] ?? "#333",
        values: categories.map((broker) => {
          const row = subset.find(
            (r) => r.broker === broker && label(r) === name && r.error === undefined,
          );
          return row ? value(row) : undefined;
        }),
      })),
    };
  };
  const fullSpeed = rows.filter((r) => r.targetRate === null);
  if (fullSpeed.length > 0)
    panels.push(
      build(
        fullSpeed,
        "Throughput: delivered messages/s at full speed (higher is better)",
        integer,
        (r) => r.messagesPerSecond,
        caseLabel,
      ),
    );
  const fixedRate = rows.filter((r) => r.targetRate !== null);
  if (fixedRate.length > 0) {
    const rate = fixedRate[0]?.targetRate ?? 0;
    panels.push(
      build(
        fixedRate,
        `Latency: p99 end to end at ${integer(rate)} msg/s (lower is better)`,
        millis,
        (r) => r.p99Ms,
        caseLabel,
      ),
    );
  }
  return panels;
}
