import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { once } from "node:events";
import { appendFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { reapOnExit } from "./reaper.js";

/** The built CLI (dist/harness beside dist/src). */
export const CLI = fileURLToPath(new URL("../src/cli.js", import.meta.url));

export interface LogLine {
  event?: string;
  msg?: string;
  level?: number;
  [key: string]: unknown;
}

/** Runs a CLI command to completion; resolves with its exit code and output. */
export async function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { PATH: process.env.PATH, ...env },
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const [code] = (await once(child, "exit")) as [number | null];
  return { code, stdout, stderr };
}

/**
 * A `sluice start` process whose JSON log lines are parsed as they arrive, so tests can wait
 * for an event (listener bound, node ready, drain finished) instead of sleeping.
 */
export class SluiceProcess {
  readonly lines: LogLine[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr = "";
  private waiters: Array<{ match: (l: LogLine) => boolean; resolve: (l: LogLine) => void }> = [];

  private constructor(readonly child: ChildProcessWithoutNullStreams) {
    let partial = "";
    // SLUICE_TEST_LOG_DIR keeps every node's log as a file per process, to read after a failure.
    const logDir = process.env.SLUICE_TEST_LOG_DIR;
    if (logDir) mkdirSync(logDir, { recursive: true });
    const logFile = logDir ? join(logDir, `node-${child.pid}.log`) : undefined;
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      if (logFile) appendFileSync(logFile, chunk);
      partial += chunk;
      const complete = partial.split("\n");
      partial = complete.pop() ?? "";
      for (const text of complete) if (text.trim() !== "") this.accept(text);
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      this.stderr += chunk;
    });
    this.exited = once(child, "exit").then(([code, signal]) => ({
      code: code as number | null,
      signal: signal as NodeJS.Signals | null,
    }));
  }

  /**
   * `execArgv`: Node's own flags (e.g. --cpu-prof, which NODE_OPTIONS refuses); `cli`: another
   * build's CLI (a benchmark's baseline).
   */
  static spawn(
    args: string[],
    env: NodeJS.ProcessEnv = {},
    execArgv: string[] = [],
    cli = CLI,
  ): SluiceProcess {
    const child = spawn(process.execPath, [...execArgv, cli, ...args], {
      env: { PATH: process.env.PATH, SLUICE_LOG_LEVEL: "debug", ...env },
    });
    reapOnExit(child);
    return new SluiceProcess(child);
  }

  /** A node run inside a network namespace (harness/fault-network.ts): `ip netns exec` execs it. */
  static spawnIn(namespace: string, args: string[], env: NodeJS.ProcessEnv = {}): SluiceProcess {
    const child = spawn("ip", ["netns", "exec", namespace, process.execPath, CLI, ...args], {
      env: { PATH: process.env.PATH, SLUICE_LOG_LEVEL: "debug", ...env },
    });
    reapOnExit(child);
    return new SluiceProcess(child);
  }

  private accept(text: string): void {
    let line: LogLine;
    try {
      line = JSON.parse(text) as LogLine;
    } catch {
      line = { msg: text };
    }
    this.lines.push(line);
    this.waiters = this.waiters.filter((w) => {
      if (!w.match(line)) return true;
      w.resolve(line);
      return false;
    });
  }

  /** Resolves with the first log line (past or future) that matches; rejects if the process exits first. */
  waitForLog(match: (line: LogLine) => boolean): Promise<LogLine> {
    const seen = this.lines.find(match);
    if (seen) return Promise.resolve(seen);
    return Promise.race([
      new Promise<LogLine>((resolve) => this.waiters.push({ match, resolve })),
      this.exited.then(({ code }) => {
        throw new Error(
          `sluice exited (${code}) before the expected log line; stderr: ${this.stderr}`,
        );
      }),
    ]);
  }

  waitForEvent(event: string): Promise<LogLine> {
    return this.waitForLog((l) => l.event === event);
  }

  /** Waits for readiness and returns the bound ports by listener type, and the HTTP port. */
  async ready(): Promise<{ ports: Record<string, number>; httpPort: number }> {
    await this.waitForEvent("node.ready");
    const ports: Record<string, number> = {};
    for (const l of this.lines)
      if (l.event === "listener.started") ports[String(l.type)] ??= Number(l.port);
    const http = this.lines.find((l) => l.event === "http.started");
    return { ports, httpPort: Number(http?.port) };
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }
}
