import type { ChildProcess } from "node:child_process";

interface Entry {
  name: string;
  stop: () => Promise<void>;
  /** Process ids to SIGKILL if the bench exits before stop() could run. */
  pids: () => number[];
}

/** How long a graceful stop of everything may take on Ctrl-C before we kill and exit. */
const STOP_ALL_TIMEOUT_MS = 8_000;

/**
 * Everything a bench run started (brokers, Redis, generator processes), so that it is stopped
 * at the end of a measurement, on Ctrl-C or SIGTERM, and, as a last resort, killed
 * synchronously when the process exits for any other reason.
 */
export class CleanupRegistry {
  private readonly entries = new Set<Entry>();
  private stopping: Promise<void> | undefined;
  private interruption: Promise<number> | undefined;

  /** Registers something to stop; returns the function that stops it (once) and forgets it. */
  add(
    name: string,
    stop: () => Promise<void>,
    pids: () => number[] = () => [],
  ): () => Promise<void> {
    const entry: Entry = { name, stop, pids };
    this.entries.add(entry);
    let stopped: Promise<void> | undefined;
    return () => {
      stopped ??= (async () => {
        try {
          await entry.stop();
        } finally {
          this.entries.delete(entry);
        }
      })();
      return stopped;
    };
  }

  /** Registers a child process: stopped with SIGTERM, then SIGKILL after `graceMs`. */
  addChild(name: string, child: ChildProcess, graceMs = 2_000): () => Promise<void> {
    return this.add(
      name,
      () => stopChild(child, graceMs),
      () => (child.pid ? [child.pid] : []),
    );
  }

  /** Stops everything still registered, newest first, each bounded in time. */
  stopAll(): Promise<void> {
    this.stopping ??= (async () => {
      const entries = [...this.entries].reverse();
      await withTimeout(
        Promise.allSettled(entries.map((entry) => entry.stop())).then(() => undefined),
        STOP_ALL_TIMEOUT_MS,
      );
      this.killAllSync();
      this.entries.clear();
    })();
    return this.stopping;
  }

  /** SIGKILLs every registered process (for the 'exit' event, where nothing async runs). */
  killAllSync(): void {
    for (const entry of this.entries) {
      for (const pid of entry.pids()) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
    }
  }

  /**
   * After SIGINT or SIGTERM: the exit code the signal calls for (130, 143), once everything is
   * stopped; undefined while no signal came. Whoever would exit meanwhile waits for it.
   */
  interrupted(): Promise<number> | undefined {
    return this.interruption;
  }

  /**
   * Ctrl-C / SIGTERM: stop everything, then exit 130 (143). A second signal kills at once.
   * Without this, brokers and Redis would outlive an interrupted run.
   */
  installSignalHandlers(log: (line: string) => void): void {
    let interrupted = false;
    const onSignal = (signal: NodeJS.Signals): void => {
      const code = signal === "SIGINT" ? 130 : 143;
      if (interrupted) {
        this.killAllSync();
        process.exit(code);
      }
      interrupted = true;
      log(`${signal}: stopping everything this run started`);
      this.interruption = this.stopAll().then(
        () => code,
        () => code,
      );
      void this.interruption.then(() => process.exit(code));
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    process.on("exit", () => this.killAllSync());
  }
}

async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what = "operation"): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
