import type { ChildProcess } from "node:child_process";

/**
 * Kills the processes a test file started (Redis, HAProxy, Sluice nodes) when the file's process
 * ends before its `after` hooks ran: a timed-out test file is terminated by the test runner, and
 * its children would otherwise live on as orphans holding ports and memory. Synchronous
 * clean-ups (a fault network's namespaces) run after the kills.
 */
const children = new Set<ChildProcess>();
const cleanUps = new Set<() => void>();
let installed = false;

export function reapOnExit(child: ChildProcess): void {
  children.add(child);
  child.once("exit", () => children.delete(child));
  install();
}

/** Runs `cleanUp` (synchronous) if the process exits first; the result unregisters it. */
export function cleanUpOnExit(cleanUp: () => void): () => void {
  cleanUps.add(cleanUp);
  install();
  return () => cleanUps.delete(cleanUp);
}

function install(): void {
  if (installed) return;
  installed = true;
  const killAll = (): void => {
    for (const orphan of children) orphan.kill("SIGKILL");
    for (const cleanUp of cleanUps) {
      try {
        cleanUp();
      } catch {
        // the others still run
      }
    }
  };
  process.once("exit", killAll);
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
    process.once(signal, () => {
      // A process that handles the signal itself (the bench stops what it started, then exits
      // 130 or 143) exits when it is done; the "exit" hook above still kills what is left then.
      if (process.listenerCount(signal) > 0) return;
      killAll();
      process.exit(1);
    });
  }
}
