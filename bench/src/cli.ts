#!/usr/bin/env node
/**
 * `npm run bench -- [scenario...]`: measures Sluice against Mosquitto and bare aedes in one
 * run, writes bench/results/<scenario>-<timestamp>.{json,svg,md}, prints the table.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { setPriority, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  BENCH_CGROUP_PREFIX,
  BENCH_NICE,
  CFS_PERIOD_US,
  CPU_CONTROLLER,
  checkCpuController,
  NODE_CPU_SHARES,
  NodeCpuBudget,
  sweepStaleCgroups,
} from "../../harness/cpu-cgroup.js";
import { MOSQUITTO_PATH } from "./brokers/mosquitto.js";
import { benchSluiceConfig, nodeExecArgv } from "./brokers/sluice.js";
import { mqttBenchmarkInstalled } from "./crosscheck/mqtt-benchmark.js";
import { CleanupRegistry } from "./lifecycle/cleanup-registry.js";
import { parseCli, USAGE } from "./options.js";
import { resultTable } from "./report/markdown-table.js";
import { fileTimestamp, type RunRecord, writeRunRecord } from "./report/result-file.js";
import { renderScenarioTables } from "./report/scenario-table.js";
import { panelsFor, renderChart } from "./report/svg-chart.js";
import { parsePhases } from "./scenarios/phase-selection.js";
import { defaultScenarios, findScenario } from "./scenarios/registry.js";
import type { ResultRow, Scenario, ScenarioTable } from "./scenarios/scenario.js";
import { machineInfo, versions } from "./system/machine-info.js";

const DEFAULT_RESULTS = fileURLToPath(new URL("../../../bench/results", import.meta.url));

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function main(argv: string[], cleanup: CleanupRegistry): Promise<number> {
  let cli: ReturnType<typeof parseCli>;
  try {
    cli = parseCli(argv, process.env);
  } catch (error) {
    process.stderr.write(`bench: ${(error as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (cli.help) {
    log(USAGE);
    return 0;
  }
  const scenarios: Scenario[] =
    cli.scenarios.length > 0 ? cli.scenarios.map(findScenario) : defaultScenarios();
  try {
    if (cli.run.phases) for (const scenario of scenarios) phasesOf(scenario, cli.run.phases);
    sluiceNodeSettings();
  } catch (error) {
    process.stderr.write(`bench: ${(error as Error).message}\n`);
    return 2;
  }
  const resultsDir = cli.resultsDir ?? DEFAULT_RESULTS;
  cleanup.installSignalHandlers(log);
  let nodeCpu: NodeCpuBudget | undefined;
  if (cli.run.nodeCpu !== undefined) {
    try {
      nodeCpu = nodeCpuBudget(cli.run.nodeCpu, scenarios, cleanup);
    } catch (error) {
      process.stderr.write(`bench: ${(error as Error).message}\n`);
      return 2;
    }
  }
  // A hard bound on the whole invocation: whatever hangs, everything started is stopped.
  const deadline = setTimeout(() => {
    log(`bench: over --max-minutes ${cli.maxMinutes}: stopping everything`);
    cleanup.stopAll().finally(() => process.exit(1));
  }, cli.maxMinutes * 60_000);
  deadline.unref();

  const machine = machineInfo();
  const versionInfo = versions(MOSQUITTO_PATH);
  const notes = [
    `${machine.cores} cores, load average ${machine.loadAverageAtStart.toFixed(2)} at start; brokers, Redis and the generator share them, so compare ratios within a run, not absolute figures across runs`,
    mqttBenchmarkInstalled()
      ? "mqtt-benchmark installed: its figure is publishes/s with one message in flight per client and no subscribers"
      : "mqtt-benchmark not installed (bench/tools/install-mqtt-benchmark.sh); cross-check with Mosquitto's C clients only",
    ...(nodeCpu
      ? [
          `--node-cpu ${nodeCpu.cores}: each broker node process in a cgroup of its own, CFS quota ${nodeCpu.quotaUs} µs per ${CFS_PERIOD_US} µs, cpu.shares ${NODE_CPU_SHARES} (8 ordinary processes' weight, so it gets its quota on a busy machine); Redis and the generators without a quota, at nice ${BENCH_NICE}`,
        ]
      : []),
  ];
  const started = new Date();
  const timestamp = fileTimestamp(started);
  const allRows: ResultRow[] = [];
  const allTables: ScenarioTable[] = [];
  const workDir = await mkdtemp(join(tmpdir(), "sluice-bench-"));
  const removeWorkDir = cleanup.add("work dir", () =>
    rm(workDir, { recursive: true, force: true }),
  );
  try {
    for (const scenario of scenarios) {
      const scenarioStart = new Date();
      log(`== ${scenario.name}: ${scenario.description}`);
      const output = await scenario.run({
        options: cli.run,
        cleanup,
        log,
        workDir,
        ...(nodeCpu ? { nodeCpu } : {}),
      });
      allRows.push(...output.rows);
      const tables = output.tables ?? [];
      allTables.push(...tables);
      const record: RunRecord = {
        scenario: scenario.name,
        startedAt: scenarioStart.toISOString(),
        finishedAt: new Date().toISOString(),
        machine,
        versions: versionInfo,
        config: {
          ...output.config,
          quick: cli.run.quick,
          ...(output.rows.length > 0
            ? { brokers: [...new Set(output.rows.map((r) => r.broker))] }
            : {}),
          publisherProcesses: cli.run.publisherProcesses,
          subscriberProcesses: cli.run.subscriberProcesses,
          ...(nodeCpu ? { nodeCpu: nodeCpu.describe() } : {}),
          ...sluiceNodeSettings(),
        },
        notes,
        results: output.rows,
        ...(tables.length > 0 ? { tables } : {}),
      };
      const file = await writeRunRecord(resultsDir, record, timestamp);
      // Scenarios with only their own tables (connections, storm, ...) have no rate chart.
      if (output.rows.length > 0) {
        await writeFile(
          file.replace(/\.json$/, ".svg"),
          renderChart(
            `Sluice bench: ${scenario.name}`,
            chartSubtitle(record),
            panelsFor(output.rows),
          ),
        );
        log(`\n${resultTable(output.rows)}\n`);
      }
      if (tables.length > 0) {
        const markdown = renderScenarioTables(tables);
        await writeFile(file.replace(/\.json$/, ".md"), `${markdown}\n`);
        log(`\n${markdown}\n`);
      }
      log(`results: ${file}`);
    }
    if (scenarios.length > 1 && allRows.length > 0) {
      const name = scenarios.map((s) => s.name).join("+");
      const combined = join(resultsDir, `${name}-${timestamp}`);
      await writeFile(
        `${combined}.svg`,
        renderChart(
          "Sluice vs Mosquitto vs bare aedes",
          `${machine.cores} cores (${machine.cpuModel}), loopback, 10 publishers -> 10 subscribers, ${started.toISOString().slice(0, 10)}`,
          panelsFor(allRows),
        ),
      );
      await writeFile(`${combined}.md`, `${resultTable(allRows)}\n`);
      log(`\n== all\n\n${resultTable(allRows)}\n\ncombined chart: ${combined}.svg`);
    }
    const tableErrors = allTables.some((t) =>
      t.rows.some((row) => typeof row.error === "string" && row.error !== ""),
    );
    return allRows.some((r) => r.error !== undefined) || tableErrors ? 1 : 0;
  } finally {
    await removeWorkDir();
    await cleanup.stopAll();
  }
}

/**
 * `--node-cpu`: refused unless every scenario named takes it and the cpu controller is there and
 * writable; cgroups a killed run left behind are swept first. Every cgroup made is removed at
 * the end, on SIGINT/SIGTERM (through the cleanup registry) and, as a last resort, on exit.
 */
function nodeCpuBudget(
  cores: number,
  scenarios: readonly Scenario[],
  cleanup: CleanupRegistry,
): NodeCpuBudget {
  const refusing = scenarios.filter((s) => !s.nodeCpu).map((s) => s.name);
  if (refusing.length > 0)
    throw new Error(
      `--node-cpu: ${refusing.join(", ")} does not take it (its nodes would run unconstrained)`,
    );
  checkCpuController(CPU_CONTROLLER);
  const swept = sweepStaleCgroups(CPU_CONTROLLER);
  if (swept.length > 0) log(`--node-cpu: removed cgroups of earlier runs: ${swept.join(", ")}`);
  // inherited by everything the run spawns from here on: Redis, the generators (and the nodes,
  // whose cgroup's weight is what counts for them)
  setPriority(BENCH_NICE);
  const budget = new NodeCpuBudget(cores, CPU_CONTROLLER);
  cleanup.add("node cgroups", async () => budget.releaseAll());
  // before the registry's last-resort SIGKILLs, so no cgroup is left holding a dying node
  process.prependListener("exit", () => budget.releaseAll());
  log(
    `--node-cpu ${cores}: each broker node gets ${budget.quotaUs} µs of CPU per ${CFS_PERIOD_US} µs period, weight ${NODE_CPU_SHARES}; Redis and the generators at nice ${BENCH_NICE} (cgroups ${CPU_CONTROLLER}/${BENCH_CGROUP_PREFIX}${process.pid}-*)`,
  );
  return budget;
}

/** What BENCH_SLUICE_EXEC_ARGV / BENCH_SLUICE_CONFIG changed in every Sluice node, for the record. */
function sluiceNodeSettings(): Record<string, unknown> {
  const execArgv = nodeExecArgv();
  const config = benchSluiceConfig();
  return {
    ...(execArgv.length > 0 ? { sluiceExecArgv: execArgv } : {}),
    ...(Object.keys(config).length > 0 ? { sluiceConfig: config } : {}),
  };
}

/** Checks `--phases` against a scenario before anything starts: one without phases refuses it. */
function phasesOf(scenario: Scenario, entries: readonly string[]): void {
  if (!scenario.phases) throw new Error(`--phases: ${scenario.name} has no phases to pick from`);
  parsePhases(entries, scenario.phases);
}

function chartSubtitle(record: RunRecord): string {
  return `${record.machine.cores} cores (${record.machine.cpuModel}), loopback, ${record.startedAt.slice(0, 10)}; Sluice ${record.versions.sluice}, Mosquitto ${record.versions.mosquitto}, aedes ${record.versions.aedesStock}`;
}

/**
 * Exits with `code`; after SIGINT or SIGTERM, with the signal's code (130, 143) once everything
 * the run started is stopped: a scenario whose brokers the signal stopped fails, and main
 * returns, before that.
 */
function exitWhenStopped(cleanup: CleanupRegistry, code: number): void {
  const interrupted = cleanup.interrupted();
  if (interrupted === undefined) process.exit(code);
  else void interrupted.then((signalCode) => process.exit(signalCode));
}

const cleanup = new CleanupRegistry();
main(process.argv.slice(2), cleanup).then(
  (code) => exitWhenStopped(cleanup, code),
  (error: unknown) => {
    if (cleanup.interrupted() === undefined) {
      process.stderr.write(
        `bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
    }
    exitWhenStopped(cleanup, 1);
  },
);
