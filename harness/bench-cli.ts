import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** The built bench CLI (dist/harness beside dist/bench). */
const BENCH_CLI = fileURLToPath(new URL("../bench/src/cli.js", import.meta.url));

/** How many of the last output lines a failure quotes. */
const TAIL_LINES = 40;

/** A bench CLI process whose output is always read, so it never blocks on a full pipe. */
export interface BenchProcess {
  child: ChildProcess;
  /**
   * The next stdout line (after the last one matched) matching `pattern`. Rejects, quoting the
   * output's tail, when output ends or `ms` pass first.
   */
  lineMatching(pattern: RegExp, ms?: number): Promise<string>;
  /** The process's exit code and signal; rejects, quoting the output's tail, after `ms`. */
  exited(ms?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * A quick run of `scenario` against one in-memory Sluice node, long enough (a 20 s window,
 * at most 2 minutes) to be interrupted mid-measurement; `extra`: the scenario's own flags.
 */
export function quickSluiceRun(
  scenario: string,
  resultsDir: string,
  extra: readonly string[] = [],
): string[] {
  const window = ["--measure-seconds", "20", "--max-minutes", "2"];
  return [scenario, "--quick", "--brokers", "sluice", ...extra, ...window, "--results", resultsDir];
}

/**
 * The bench CLI run with `args` (and `env` added to this process's). Both streams are read as
 * they come: a reader that stops (readline's async iterator pauses its input after 1,024
 * unread lines) would leave the bench blocked in a write, unable to stop on a signal.
 */
export function spawnBench(
  args: readonly string[],
  env: Readonly<Record<string, string>> = {},
): BenchProcess {
  const child = spawn(process.execPath, [BENCH_CLI, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  const stdout: string[] = [];
  const tail: string[] = [];
  let next = 0;
  let ended = false;
  const changed = new Set<() => void>();
  const notify = (): void => {
    for (const listener of changed) listener();
  };
  const keep = (line: string): void => {
    tail.push(line);
    if (tail.length > TAIL_LINES) tail.shift();
  };
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
    stdout.push(line);
    keep(line);
    notify();
  });
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on("line", (line) =>
    keep(`stderr: ${line}`),
  );
  child.stdout?.once("end", () => {
    ended = true;
    notify();
  });
  const quoted = (): string => `; its last output:\n${tail.join("\n")}`;

  const lineMatching = (pattern: RegExp, ms = 60_000): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        while (next < stdout.length) {
          const line = stdout[next++] as string;
          if (pattern.test(line)) {
            settle(() => resolve(line));
            return;
          }
        }
        if (ended) settle(() => reject(new Error(`the bench ended before ${pattern}${quoted()}`)));
      };
      const timer = setTimeout(
        () => settle(() => reject(new Error(`no line matching ${pattern} in ${ms} ms${quoted()}`))),
        ms,
      );
      const settle = (finish: () => void): void => {
        clearTimeout(timer);
        changed.delete(check);
        finish();
      };
      changed.add(check);
      check();
    });

  const exited = (ms = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> =>
    new Promise((resolve, reject) => {
      if (child.exitCode !== null || child.signalCode !== null)
        return resolve({ code: child.exitCode, signal: child.signalCode });
      const timer = setTimeout(
        () => reject(new Error(`the bench did not exit in ${ms} ms${quoted()}`)),
        ms,
      );
      child.once("exit", (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal });
      });
    });

  return { child, lineMatching, exited };
}
