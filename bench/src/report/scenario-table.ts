import type { ScenarioTable, TableCell } from "../scenarios/scenario.js";

function cell(value: TableCell | undefined): string {
  if (value === null || value === undefined) return "";
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return value.toLocaleString("en-US");
    return Math.abs(value) >= 100 ? Math.round(value).toLocaleString("en-US") : value.toFixed(2);
  }
  return value.replace(/\|/g, "\\|");
}

/** A scenario table as Markdown: a heading, the table (figures right-aligned), its notes. */
export function renderScenarioTable(table: ScenarioTable): string {
  const numeric = table.columns.map((column) =>
    table.rows.some((row) => typeof row[column] === "number"),
  );
  const lines = [
    `### ${table.title}`,
    "",
    `| ${table.columns.join(" | ")} |`,
    `| ${numeric.map((n) => (n ? "---:" : "---")).join(" | ")} |`,
    ...table.rows.map((row) => `| ${table.columns.map((c) => cell(row[c])).join(" | ")} |`),
  ];
  if (table.notes && table.notes.length > 0)
    lines.push("", ...table.notes.map((note) => `- ${note}`));
  return lines.join("\n");
}

export function renderScenarioTables(tables: readonly ScenarioTable[]): string {
  return tables.map(renderScenarioTable).join("\n\n");
}
