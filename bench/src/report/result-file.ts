import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ResultRow, ScenarioTable } from "../scenarios/scenario.js";
import type { MachineInfo, Versions } from "../system/machine-info.js";

export interface RunRecord {
  scenario: string;
  startedAt: string;
  finishedAt: string;
  machine: MachineInfo;
  versions: Versions;
  /** The invocation's options and the scenario's own settings. */
  config: Record<string, unknown>;
  notes: string[];
  results: ResultRow[];
  /** The scenario's own tables (connections, storm, failover, security overhead). */
  tables?: ScenarioTable[];
}

/** A timestamp usable in file names: 2026-11-25T10-31-07Z. */
export function fileTimestamp(date: Date): string {
  return date
    .toISOString()
    .replace(/\.\d+Z$/, "Z")
    .replace(/:/g, "-");
}

/** Writes `<scenario>-<timestamp>.json` and returns its path. */
export async function writeRunRecord(
  dir: string,
  record: RunRecord,
  timestamp: string,
): Promise<string> {
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${record.scenario}-${timestamp}.json`);
  await writeFile(file, `${JSON.stringify(record, null, 2)}\n`);
  return file;
}
